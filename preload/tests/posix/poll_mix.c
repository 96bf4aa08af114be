/*
 * poll() on a TCP socket and a kernel pipe together: nothing ready; a
 * sleeping call woken by data on the socket; both readable (the socket also
 * writable); only what is still unread after draining one; a sleeping call
 * woken by the pipe (written by a child process).
 */
#include "common.h"

#include <sys/wait.h>

/* poll() on {sock, pipe}; prints the result and both revents. */
static int poll2(int s, short sev, int p, int timeout_ms)
{
    struct pollfd f[2] = {{.fd = s, .events = sev}, {.fd = p, .events = POLLIN}};
    int r = poll(f, 2, timeout_ms);
    if (r < 0) {
        say("poll(%d) = -1 %s", timeout_ms, errname(errno));
        return r;
    }
    char sock[64];
    snprintf(sock, sizeof sock, "%s", poll_mask(f[0].revents));
    say("poll(sock %s, pipe IN, %d) = %d sock=%s pipe=%s", sev == POLLIN ? "IN" : "IN|OUT",
        timeout_ms, r, sock, poll_mask(f[1].revents));
    return r;
}

/* A child process writes "Q" into the pipe 200 ms from now. */
static void write_pipe_later(int w)
{
    pid_t pid = fork();
    if (pid < 0)
        fatal("fork");
    if (pid == 0) {
        usleep(200 * 1000);
        if (write(w, "Q", 1) != 1)
            _exit(1);
        _exit(0);
    }
}

static void app(void)
{
    int s = tcp_client(other_ip4, port);
    int p[2];
    char buf[64];
    if (pipe(p) < 0)
        fatal("pipe");

    poll2(s, POLLIN, p[0], 0);
    show("send(sock, \"go\")", send(s, "go", 2, 0)); /* the peer answers "hello" */
    poll2(s, POLLIN, p[0], 5000); /* sleeps until the socket wakes it */
    show("write(pipe, \"P\")", write(p[1], "P", 1));
    poll2(s, POLLIN, p[0], 0);
    poll2(s, POLLIN | POLLOUT, p[0], 0);
    show_data("recv(sock, 64)", recv(s, buf, sizeof buf, 0), buf);
    poll2(s, POLLIN, p[0], 0);
    show_data("read(pipe, 64)", read(p[0], buf, sizeof buf), buf);
    poll2(s, POLLIN, p[0], 200);
    write_pipe_later(p[1]);
    poll2(s, POLLIN, p[0], 5000); /* sleeps until the pipe wakes it */
    show_data("read(pipe, 64)", read(p[0], buf, sizeof buf), buf);
    wait(NULL);
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
    expect_str(c, "bye");
    close(c);
    say("closed");
}

SEMANTICS_MAIN(app, peer)
