/*
 * MSG_PEEK and FIONREAD: a peek (the first one blocking until data comes)
 * returns the same bytes as the next normal recv and consumes nothing;
 * FIONREAD reports the queued byte count after each step; an empty queue
 * gives EAGAIN. Once the data is there every recv uses MSG_DONTWAIT, so a
 * wrong count shows as EAGAIN, not as a hang.
 */
#include "common.h"

static void show_fionread(int fd)
{
    int n = -1;
    int r = ioctl(fd, FIONREAD, &n);
    if (r < 0)
        say("ioctl(FIONREAD) = -1 %s", errname(errno));
    else
        say("ioctl(FIONREAD) = 0 value=%d", n);
}

static void app(void)
{
    char buf[64];
    int s = tcp_client(other_ip4, port);
    show_fionread(s);
    show("send(\"go\")", send(s, "go", 2, 0)); /* the peer answers "0123456789" */
    show_data("recv(4, MSG_PEEK) (blocking)", recv(s, buf, 4, MSG_PEEK), buf);
    show_fionread(s);
    show_data("recv(4, MSG_PEEK | MSG_DONTWAIT)", recv(s, buf, 4, MSG_PEEK | MSG_DONTWAIT), buf);
    show_data("recv(4, MSG_DONTWAIT)", recv(s, buf, 4, MSG_DONTWAIT), buf);
    show_fionread(s);
    show_data("recv(64, MSG_PEEK | MSG_DONTWAIT)",
              recv(s, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT), buf);
    show_data("recv(64, MSG_DONTWAIT)", recv(s, buf, sizeof buf, MSG_DONTWAIT), buf);
    show_fionread(s);
    show_data("recv(64, MSG_DONTWAIT)", recv(s, buf, sizeof buf, MSG_DONTWAIT), buf);
    show_data("recv(64, MSG_PEEK | MSG_DONTWAIT)",
              recv(s, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT), buf);
    send_str(s, "bye");
    expect_eof(s);
}

static void peer(void)
{
    int l = tcp_server(port);
    say("ready");
    int c = accept_one(l);
    expect_str(c, "go");
    send_str(c, "0123456789");
    expect_str(c, "bye");
    close(c);
    say("closed");
}

SEMANTICS_MAIN(app, peer)
