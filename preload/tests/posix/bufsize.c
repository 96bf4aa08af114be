/*
 * SO_RCVBUF/SO_SNDBUF: the size read back is twice the size set (as Linux
 * accounts it); a listener's sizes pass to the connections it accepts; a
 * size set before connect applies to the connection; data flows through
 * small buffers.
 */
#include "common.h"

#define SIZE 100000

static void show_bufs(const char *what, int fd)
{
    int rcv = 0, snd = 0;
    socklen_t l1 = sizeof rcv, l2 = sizeof snd;
    int r1 = getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, &l1);
    int r2 = getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, &l2);
    say("%s: SO_RCVBUF %s %d, SO_SNDBUF %s %d", what, r1 ? errname(errno) : "=", rcv,
        r2 ? errname(errno) : "=", snd);
}

static void set_buf(int fd, int opt, int size)
{
    if (setsockopt(fd, SOL_SOCKET, opt, &size, sizeof size) != 0)
        fatal("setsockopt");
}

static void app(void)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    set_buf(l, SO_RCVBUF, 4096);
    set_buf(l, SO_SNDBUF, 16384);
    show_bufs("listener after setting 4096/16384", l);
    struct sockaddr_in any = addr4("0.0.0.0", port);
    if (bind(l, (struct sockaddr *)&any, sizeof any) || listen(l, 4))
        fatal("bind/listen");
    say("ready");
    int a = accept_one(l);
    show_bufs("accepted", a);
    char buf[4096];
    size_t got = 0;
    ssize_t n;
    while ((n = read(a, buf, sizeof buf)) > 0)
        got += (size_t)n;
    say("read until EOF through the small buffer = %zu bytes", got);

    int c = socket(AF_INET, SOCK_STREAM, 0);
    set_buf(c, SO_RCVBUF, 6000);
    struct sockaddr_in to = addr4(other_ip4, port + 1);
    show("connect after SO_RCVBUF 6000", connect(c, (struct sockaddr *)&to, sizeof to));
    int rcv = 0;
    socklen_t len = sizeof rcv;
    getsockopt(c, SOL_SOCKET, SO_RCVBUF, &rcv, &len);
    say("connected: SO_RCVBUF = %d", rcv);
    close(c);
}

static void peer(void)
{
    int l = tcp_server(port + 1);
    int s = tcp_client(other_ip4, port);
    static char data[SIZE];
    memset(data, 'b', sizeof data);
    size_t off = 0;
    while (off < SIZE) {
        ssize_t n = write(s, data + off, SIZE - off);
        if (n <= 0)
            fatal("write");
        off += (size_t)n;
    }
    close(s);
    int c = accept_one(l);
    expect_eof(c);
}

SEMANTICS_MAIN(app, peer)
