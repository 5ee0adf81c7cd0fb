/* benches/floor.c: the floor of benches/compare.sh, the machine's own limit for a UDP answer.
 *
 * A minimal DNS responder: THREADS threads, each with its own SO_REUSEPORT UDP socket on the
 * same loopback port, move up to 32 datagrams per system call (recvmmsg in, sendmmsg out) and
 * answer every query with one fixed record (A 127.0.0.1, TTL 5, the name a pointer to the
 * question), whatever it asks. No lookup, no parsing past the question, no logging: whatever a
 * real server does on top of this costs it queries/s. It is a yardstick, not a DNS server: it
 * must never be pointed at by a client that wants correct answers.
 *
 * Build (compare.sh does it): cc -O2 -pthread -o floor benches/floor.c
 * Run:   floor PORT [THREADS]     (binds 127.0.0.1:PORT only; stops on SIGTERM/SIGINT)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 32
#define BUF 512

static int port;

/* The answer appended after the question: name pointer to offset 12, A IN, TTL 5, 127.0.0.1. */
static const unsigned char answer[] = {0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 0, 0, 1};

/* Turns the query in buf[0..len) into the reply in place; returns its length, 0 to drop it. */
static size_t respond(unsigned char *buf, size_t len) {
    if (len < 12 || (buf[2] & 0x80) || buf[4] != 0 || buf[5] != 1) return 0;
    size_t i = 12;
    while (i < len && buf[i] != 0) {
        if (buf[i] > 63) return 0;
        i += 1 + buf[i];
    }
    i += 5; /* the root label, QTYPE, QCLASS */
    if (i > len || i + sizeof answer > BUF) return 0;
    buf[2] = 0x84 | (buf[2] & 0x01); /* QR, AA, RD copied */
    buf[3] = 0x00;                   /* NOERROR */
    buf[6] = 0, buf[7] = 1;          /* ANCOUNT 1 */
    buf[8] = buf[9] = buf[10] = buf[11] = 0;
    memcpy(buf + i, answer, sizeof answer);
    return i + sizeof answer;
}

static void *serve(void *arg) {
    (void)arg;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        perror("floor: socket");
        exit(1);
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("floor: bind");
        exit(1);
    }
    static __thread unsigned char bufs[BATCH][BUF];
    static __thread struct sockaddr_in peers[BATCH];
    static __thread struct iovec iov[BATCH];
    static __thread struct mmsghdr in[BATCH], out[BATCH];
    for (;;) {
        for (int k = 0; k < BATCH; k++) {
            iov[k].iov_base = bufs[k];
            iov[k].iov_len = BUF;
            memset(&in[k].msg_hdr, 0, sizeof in[k].msg_hdr);
            in[k].msg_hdr.msg_name = &peers[k];
            in[k].msg_hdr.msg_namelen = sizeof peers[k];
            in[k].msg_hdr.msg_iov = &iov[k];
            in[k].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(fd, in, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0) continue;
        int m = 0;
        for (int k = 0; k < n; k++) {
            size_t len = respond(bufs[k], in[k].msg_len);
            if (len == 0) continue;
            iov[k].iov_len = len;
            out[m].msg_hdr = in[k].msg_hdr;
            out[m].msg_hdr.msg_iov = &iov[k];
            m++;
        }
        for (int sent = 0; sent < m;) {
            int r = sendmmsg(fd, out + sent, m - sent, 0);
            if (r <= 0) break;
            sent += r;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: floor PORT [THREADS]\n");
        return 2;
    }
    port = atoi(argv[1]);
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    if (port <= 0 || port > 65535 || threads < 1 || threads > 64) {
        fprintf(stderr, "floor: PORT must be 1..65535 and THREADS 1..64\n");
        return 2;
    }
    pthread_t t[64];
    for (int k = 1; k < threads; k++) pthread_create(&t[k], NULL, serve, NULL);
    serve(NULL);
    return 0;
}
