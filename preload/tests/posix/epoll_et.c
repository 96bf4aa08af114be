/*
 * epoll, edge-triggered, with a TCP socket and a kernel pipe in one set:
 * each is reported once when data arrives, not again while the data sits
 * unread (even after a partial read), and once more when new data arrives.
 */
#include "common.h"

static void app(void)
{
    int s = tcp_client(other_ip4, port);
    int p[2];
    char buf[64];
    if (pipe(p) < 0)
        fatal("pipe");
    int ep = epoll_create1(0);
    if (ep < 0)
        fatal("epoll_create1");
    ep_add(ep, s, EPOLLIN | EPOLLET, 1);
    ep_add(ep, p[0], EPOLLIN | EPOLLET, 2);

    ep_report(ep, 0);
    show("write(pipe, \"P\")", write(p[1], "P", 1));
    show("send(sock, \"go\")", send(s, "go", 2, 0)); /* the peer answers "hello" */
    ep_collect(ep, 1u << 1 | 1u << 2, 5000);
    ep_report(ep, 200); /* nothing new */
    show_data("recv(sock, 2)", recv(s, buf, 2, 0), buf);
    ep_report(ep, 200); /* still nothing new */
    show("send(sock, \"more\")", send(s, "more", 4, 0)); /* the peer answers "world" */
    ep_report(ep, 5000); /* new data on the socket only */
    ep_report(ep, 200);
    show("write(pipe, \"Q\")", write(p[1], "Q", 1));
    ep_report(ep, 5000); /* new data in the pipe only */
    ep_report(ep, 200);
    show_data("recv(sock, 64)", recv(s, buf, sizeof buf, 0), buf);
    show_data("read(pipe, 64)", read(p[0], buf, sizeof buf), buf);
    ep_report(ep, 200);
    send_str(s, "bye");
    expect_eof(s);
}

static void peer(void)
{
    int l = tcp_server(port);
    say("ready");
    int c = accept_one(l);
    expect_str(c, "go");
    send_str(c, "hello");
    expect_str(c, "more");
    send_str(c, "world");
    expect_str(c, "bye");
    close(c);
    say("closed");
}

SEMANTICS_MAIN(app, peer)
