/*
 * The app as server: blocking accept returns the peer's address; a blocking
 * read waits for data; accept4(SOCK_NONBLOCK) gives a non-blocking socket
 * (O_NONBLOCK in F_GETFL, read -> EAGAIN); accept on a non-blocking listener
 * with nothing pending -> EAGAIN. Started first: prints "ready" once it listens.
 */
#include "common.h"

static void app(void)
{
    char buf[64];
    int l = tcp_server(port);
    say("ready");

    struct sockaddr_storage ss = {0};
    socklen_t len = sizeof ss;
    int c = accept(l, (struct sockaddr *)&ss, &len);
    show_addr("accept", c < 0 ? -1 : 0, &ss, port);
    show_data("read(64)", read(c, buf, sizeof buf), buf); /* the peer writes later */
    show("write(\"ack\")", write(c, "ack", 3));

    int n = accept4(l, NULL, NULL, SOCK_NONBLOCK); /* the peer's second connection */
    say("accept4(SOCK_NONBLOCK) = %s", n < 0 ? errname(errno) : "a descriptor");
    int fl = fcntl(n, F_GETFL);
    say("fcntl(F_GETFL) = O_NONBLOCK %s", fl < 0 ? errname(errno) : fl & O_NONBLOCK ? "set" : "clear");
    show_data("read(64)", read(n, buf, sizeof buf), buf);
    show("write(\"go\")", write(n, "go", 2));
    show_poll1("poll(IN, 5000)", n, POLLIN, 5000);
    show_data("read(64)", read(n, buf, sizeof buf), buf);

    show("fcntl(listener, F_SETFL, O_NONBLOCK)", fcntl(l, F_SETFL, O_NONBLOCK));
    show("accept(nothing pending)", accept(l, NULL, NULL));
    /* Close both and wait until the peer has seen both end. */
    close(n);
    shutdown(c, SHUT_WR);
    expect_eof(c);
}

static void peer(void)
{
    struct sockaddr_in a = addr4(other_ip4, port);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    show("connect", connect(c, (struct sockaddr *)&a, sizeof a));
    usleep(300 * 1000);
    send_str(c, "first");
    expect_str(c, "ack");

    int d = socket(AF_INET, SOCK_STREAM, 0);
    show("connect", connect(d, (struct sockaddr *)&a, sizeof a));
    expect_str(d, "go");
    send_str(d, "second");
    expect_eof(d);
    expect_eof(c);
    close(c);
}

SEMANTICS_MAIN(app, peer)
