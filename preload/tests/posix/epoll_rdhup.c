/*
 * EPOLLRDHUP: after the peer's shutdown(SHUT_WR) the socket is reported
 * with IN|RDHUP (level-triggered: again and again), read gives end of file,
 * and the connection is still writable in the other direction. A second
 * connection only tells the app when the peer has seen everything.
 */
#include "common.h"

static void app(void)
{
    int ctl = tcp_client(other_ip4, port);
    int s = tcp_client(other_ip4, port);
    char buf[64];
    int ep = epoll_create1(0);
    if (ep < 0)
        fatal("epoll_create1");
    ep_add(ep, s, EPOLLIN | EPOLLRDHUP, 1);

    ep_report(ep, 0);
    show("send(sock, \"go\")", send(s, "go", 2, 0)); /* the peer shuts down writing */
    ep_report(ep, 5000);
    show_data("recv(sock, 64)", recv(s, buf, sizeof buf, 0), buf);
    ep_report(ep, 0);
    show("send(sock, \"bye\")", send(s, "bye", 3, 0));
    expect_eof(ctl); /* the peer got "bye" */
    close(s);
}

static void peer(void)
{
    int l = tcp_server(port);
    say("ready");
    int ctl = accept_one(l);
    int c = accept_one(l);
    expect_str(c, "go");
    show("shutdown(SHUT_WR)", shutdown(c, SHUT_WR));
    expect_str(c, "bye");
    close(ctl);
    close(c);
    say("closed");
}

SEMANTICS_MAIN(app, peer)
