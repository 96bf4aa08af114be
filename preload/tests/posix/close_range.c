/*
 * close_range on lstack sockets: closing a range that holds one connection
 * closes it (the peer reads what was written, then end of file; the fd is
 * gone: EBADF), while CLOSE_RANGE_CLOEXEC only marks the other one, which
 * keeps working until it is closed by a second close_range.
 */
#include "common.h"
#include <linux/close_range.h>

static void app(void)
{
    int a = tcp_client(other_ip4, port);
    int b = tcp_client(other_ip4, port);
    send_str(a, "a");
    send_str(b, "b");
    show("close_range(a, a, 0)", close_range((unsigned)a, (unsigned)a, 0));
    show("write(a) after close_range", write(a, "!", 1));
    show("close_range(b, b, CLOEXEC)", close_range((unsigned)b, (unsigned)b, CLOSE_RANGE_CLOEXEC));
    show("fcntl(b, F_GETFD) & FD_CLOEXEC", fcntl(b, F_GETFD) & FD_CLOEXEC);
    show("write(b, \"still\")", write(b, "still", 5));
    show("close_range(b, b, 0)", close_range((unsigned)b, (unsigned)b, 0));
}

static void peer(void)
{
    struct timeval tv = {.tv_sec = 10};
    int l = tcp_server(port);
    say("ready");
    int a = accept_one(l);
    int b = accept_one(l);
    setsockopt(a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    expect_eof(a);
    expect_eof(b);
}

SEMANTICS_MAIN(app, peer)
