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

/*
 * poll(IN, 5000) on a socket the peer resets. The kernel sets the error a
 * moment before the state becomes CLOSE; a poll that looks in between sees
 * ERR without HUP (a race of the baseline, seen once in CI, not a
 * behaviour). Such a result is looked at again (bounded) until it settles.
 */
static void show_poll_reset(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, 5000);
    for (int i = 0; i < 100 && r == 1 && (p.revents & POLLERR) && !(p.revents & POLLHUP); i++) {
        p.revents = 0;
        r = poll(&p, 1, 10);
    }
    if (r < 0)
        say("poll(IN, 5000) = -1 %s", errname(errno));
    else
        say("poll(IN, 5000) = %d revents=%s", r, poll_mask(p.revents));
}

static void app(void)
{
    char buf[64];
    int s = tcp_client(other_ip4, port);
    show("send(\"unread\")", send(s, "unread", 6, 0));
    show_poll_reset(s);
    show_data("recv", recv(s, buf, sizeof buf, 0), buf);
    show_data("recv", recv(s, buf, sizeof buf, 0), buf);
    show("send(MSG_NOSIGNAL)", send(s, "x", 1, MSG_NOSIGNAL));
    close(s);

    int t = tcp_client(other_ip4, port);
    show("send(\"read\")", send(t, "read", 4, 0));
    show_poll_reset(t);
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
