/*
 * Blocking connect, write and read: read waits for data that comes later;
 * a 1 MiB write blocks until the peer has read enough, then reports the
 * whole length; the peer receives every byte in order.
 */
#include "common.h"

#define BIG (1 << 20)

static unsigned char pattern(size_t i)
{
    return (unsigned char)(i * 7 + i / 251);
}

static void app(void)
{
    struct sockaddr_in a = addr4(other_ip4, port);
    char buf[64];
    int s = socket(AF_INET, SOCK_STREAM, 0);
    show("connect", connect(s, (struct sockaddr *)&a, sizeof a));
    show("write(\"ping\")", write(s, "ping", 4));
    show_data("read(64)", read(s, buf, sizeof buf), buf); /* the peer answers later */

    unsigned char *big = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        big[i] = pattern(i);
    ssize_t n = show("write(1 MiB)", write(s, big, BIG)); /* the peer reads only later */
    /* A short count is what the line above checks; send the rest regardless, so
     * the steps after it still run. */
    for (size_t off = n > 0 ? (size_t)n : 0; n >= 0 && off < BIG; off += (size_t)n)
        n = write(s, big + off, BIG - off);
    expect_str(s, "all 1048576 bytes in order");
    show("shutdown(SHUT_WR)", shutdown(s, SHUT_WR));
    expect_eof(s);
}

static void peer(void)
{
    int l = tcp_server(port);
    say("ready");
    int c = accept_one(l);
    expect_str(c, "ping");
    usleep(300 * 1000);
    send_str(c, "pong");

    usleep(300 * 1000);
    unsigned char buf[65536];
    size_t got = 0, bad = 0;
    while (got < BIG) {
        ssize_t n = recv(c, buf, sizeof buf, 0);
        if (n <= 0) {
            show("recv", n);
            break;
        }
        for (ssize_t i = 0; i < n; i++)
            bad += buf[i] != pattern(got + (size_t)i);
        got += (size_t)n;
    }
    say("recv 1 MiB = %zu bytes, %zu wrong", got, bad);
    if (got == BIG && bad == 0)
        send_str(c, "all 1048576 bytes in order");
    expect_eof(c);
    close(c);
    say("closed");
}

SEMANTICS_MAIN(app, peer)
