/*
 * O_NONBLOCK through fcntl and FIONBIO on a connected TCP socket: F_GETFL
 * shows what F_SETFL (or ioctl FIONBIO) set; recv gives EAGAIN while set and
 * blocks until data arrives once cleared.
 */
#include "common.h"

static void show_getfl(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        say("fcntl(F_GETFL) = -1 %s", errname(errno));
    else
        say("fcntl(F_GETFL) = access %s, O_NONBLOCK %s",
            (fl & O_ACCMODE) == O_RDWR ? "O_RDWR" : "other", fl & O_NONBLOCK ? "set" : "clear");
}

static void app(void)
{
    char buf[64];
    int s = tcp_client(other_ip4, port);
    show_getfl(s);
    int fl = fcntl(s, F_GETFL);
    show("fcntl(F_SETFL, O_NONBLOCK)", fcntl(s, F_SETFL, fl | O_NONBLOCK));
    show_getfl(s);
    show_data("recv", recv(s, buf, sizeof buf, 0), buf);
    show("fcntl(F_SETFL, 0)", fcntl(s, F_SETFL, fl & ~O_NONBLOCK));
    show_getfl(s);
    int on = 1;
    show("ioctl(FIONBIO, 1)", ioctl(s, FIONBIO, &on));
    show_getfl(s);
    show_data("recv", recv(s, buf, sizeof buf, 0), buf);
    on = 0;
    show("ioctl(FIONBIO, 0)", ioctl(s, FIONBIO, &on));
    show_getfl(s);
    show("send(\"go\")", send(s, "go", 2, 0)); /* the peer answers "late" after 300 ms */
    show_data("recv (blocking)", recv(s, buf, sizeof buf, 0), buf);
    send_str(s, "bye");
    expect_eof(s);
}

static void peer(void)
{
    int l = tcp_server(port);
    say("ready");
    int c = accept_one(l);
    expect_str(c, "go");
    usleep(300 * 1000);
    send_str(c, "late");
    expect_str(c, "bye");
    close(c);
    say("closed");
}

SEMANTICS_MAIN(app, peer)
