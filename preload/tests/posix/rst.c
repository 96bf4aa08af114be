/*
 * Connection reset by the peer. First connection: the peer closes with
 * unread data (the kernel sends RST); the app's poll, recv and send show the
 * reset. Second connection: the peer reads everything and closes with
 * SO_LINGER {1, 0} (RST); the app asks SO_ERROR first, then recv and send.
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
    char buf[64];
    int s = tcp_client(other_ip4, port);
    show("send(\"unread\")", send(s, "unread", 6, 0));
    show_poll1("poll(IN, 5000)", s, POLLIN, 5000);
    show_data("recv", recv(s, buf, sizeof buf, 0), buf);
    show_data("recv", recv(s, buf, sizeof buf, 0), buf);
    show("send(MSG_NOSIGNAL)", send(s, "x", 1, MSG_NOSIGNAL));
    close(s);

    int t = tcp_client(other_ip4, port);
    show("send(\"read\")", send(t, "read", 4, 0));
    show_poll1("poll(IN, 5000)", t, POLLIN, 5000);
    show_so_error(t);
    show_data("recv", recv(t, buf, sizeof buf, 0), buf);
    show("send(MSG_NOSIGNAL)", send(t, "x", 1, MSG_NOSIGNAL));
    close(t);
}

static void peer(void)
{
    int l = tcp_server(port);
    say("ready");

    int c = accept_one(l);
    show_poll1("poll(IN, 5000)", c, POLLIN, 5000);
    int queued = -1;
    ioctl(c, FIONREAD, &queued);
    say("ioctl(FIONREAD) before close = %d", queued);
    close(c);

    int d = accept_one(l);
    expect_str(d, "read");
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    show("setsockopt(SO_LINGER {1, 0})", setsockopt(d, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    close(d);
    say("closed");
}

SEMANTICS_MAIN(app, peer)
