/*
 * select() on a TCP socket and a kernel pipe together: nothing ready; a
 * sleeping call woken by data on the socket; both readable (the socket also
 * writable); only what is still unread after draining one; a sleeping call
 * woken by the pipe (written by a child process).
 */
#include "common.h"

#include <sys/wait.h>

/* select() with {sock, pipe} for reading and, if `w`, the socket for
 * writing; prints the result and which sets each descriptor is left in. */
static int select2(int s, int p, int w, int timeout_ms)
{
    fd_set rd, wr;
    FD_ZERO(&rd);
    FD_ZERO(&wr);
    FD_SET(s, &rd);
    FD_SET(p, &rd);
    if (w)
        FD_SET(s, &wr);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = timeout_ms % 1000 * 1000};
    int r = select((s > p ? s : p) + 1, &rd, &wr, NULL, &tv);
    if (r < 0) {
        say("select(%d) = -1 %s", timeout_ms, errname(errno));
        return r;
    }
    say("select(read {sock, pipe}%s, %d) = %d sock=%s%s pipe=%s", w ? ", write {sock}" : "",
        timeout_ms, r, FD_ISSET(s, &rd) ? "R" : "-", FD_ISSET(s, &wr) ? "W" : "",
        FD_ISSET(p, &rd) ? "R" : "-");
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

    select2(s, p[0], 0, 0);
    show("send(sock, \"go\")", send(s, "go", 2, 0)); /* the peer answers "hello" */
    select2(s, p[0], 0, 5000); /* sleeps until the socket wakes it */
    show("write(pipe, \"P\")", write(p[1], "P", 1));
    select2(s, p[0], 0, 0);
    select2(s, p[0], 1, 0);
    show_data("recv(sock, 64)", recv(s, buf, sizeof buf, 0), buf);
    select2(s, p[0], 0, 0);
    show_data("read(pipe, 64)", read(p[0], buf, sizeof buf), buf);
    select2(s, p[0], 0, 200);
    write_pipe_later(p[1]);
    select2(s, p[0], 0, 5000); /* sleeps until the pipe wakes it */
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
