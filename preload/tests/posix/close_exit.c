/*
 * Data written just before close() or exit() is still delivered, followed by
 * end of file: the app writes 100000 bytes and closes at once; on a second
 * connection it writes a few bytes and exits without closing. The peer (with
 * a 10 s receive timeout) reads both until end of file.
 */
#include "common.h"

#define SIZE 100000

static unsigned char pattern(size_t i)
{
    return (unsigned char)(i * 13 + i / 241);
}

static void app(void)
{
    int a = tcp_client(other_ip4, port);
    int b = tcp_client(other_ip4, port);
    static unsigned char data[SIZE];
    for (size_t i = 0; i < SIZE; i++)
        data[i] = pattern(i);
    size_t off = 0;
    while (off < SIZE) {
        ssize_t n = write(a, data + off, SIZE - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    say("write 100000 bytes = %zu", off);
    show("close", close(a));
    show("write(\"exit without close\")", write(b, "exit without close", 18));
    exit(0);
}

static void peer(void)
{
    struct timeval tv = {.tv_sec = 10};
    int l = tcp_server(port);
    say("ready");
    int a = accept_one(l);
    int b = accept_one(l);
    setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    expect_pattern_until_eof(a, pattern);
    expect_eof(b);
}

SEMANTICS_MAIN(app, peer)
