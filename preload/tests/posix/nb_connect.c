/*
 * Non-blocking connect: EINPROGRESS, then writable in poll, then
 * SO_ERROR == 0. To a port of the peer where nothing listens: EINPROGRESS,
 * then poll reports the failure and SO_ERROR gives ECONNREFUSED once. A
 * blocking connect to that port fails with ECONNREFUSED directly.
 */
#include "common.h"

static void show_so_error(int fd)
{
    int err = -1;
    socklen_t len = sizeof err;
    int r = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (r < 0)
        say("getsockopt(SO_ERROR) = -1 %s", errname(errno));
    else
        say("getsockopt(SO_ERROR) = 0 value=%s", err ? errname(err) : "0");
}

static void app(void)
{
    struct sockaddr_in open_port = addr4(other_ip4, port);
    struct sockaddr_in closed_port = addr4(other_ip4, port + 1);

    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    show("connect(open port)", connect(s, (struct sockaddr *)&open_port, sizeof open_port));
    show_poll1("poll(OUT, 5000)", s, POLLOUT, 5000);
    show_so_error(s);
    show("send(\"hi\")", send(s, "hi", 2, 0));

    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    show("connect(closed port)", connect(c, (struct sockaddr *)&closed_port, sizeof closed_port));
    show_poll1("poll(OUT, 5000)", c, POLLOUT, 5000);
    show_so_error(c);
    show_so_error(c);
    close(c);

    int b = socket(AF_INET, SOCK_STREAM, 0);
    show("blocking connect(closed port)",
         connect(b, (struct sockaddr *)&closed_port, sizeof closed_port));
    close(b);

    send_str(s, "bye");
    show_poll1("poll(IN, 5000)", s, POLLIN, 5000);
    expect_eof(s);
}

static void peer(void)
{
    int l = tcp_server(port);
    say("ready");
    int c = accept_one(l);
    expect_str(c, "hi");
    expect_str(c, "bye");
    close(c);
    say("closed");
}

SEMANTICS_MAIN(app, peer)
