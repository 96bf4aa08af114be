/*
 * EPOLLONESHOT on a TCP socket: reported once, then never again (not for
 * unread data, not for new data) until EPOLL_CTL_MOD re-arms it.
 */
#include "common.h"

static void app(void)
{
    int s = tcp_client(other_ip4, port);
    char buf[64];
    int ep = epoll_create1(0);
    if (ep < 0)
        fatal("epoll_create1");
    ep_add(ep, s, EPOLLIN | EPOLLONESHOT, 1);

    show("send(sock, \"go\")", send(s, "go", 2, 0)); /* the peer answers "hello" */
    ep_report(ep, 5000);
    ep_report(ep, 200); /* disarmed, though "hello" is unread */
    show_data("recv(sock, 64)", recv(s, buf, sizeof buf, 0), buf);
    show("send(sock, \"more\")", send(s, "more", 4, 0)); /* the peer answers "world" */
    show_poll1("poll(sock, IN, 5000)", s, POLLIN, 5000);
    ep_report(ep, 200); /* still disarmed, though new data came */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.u32 = 1};
    show("epoll_ctl(MOD, IN|ONESHOT)", epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev));
    ep_report(ep, 5000);
    ep_report(ep, 200);
    show_data("recv(sock, 64)", recv(s, buf, sizeof buf, 0), buf);
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
