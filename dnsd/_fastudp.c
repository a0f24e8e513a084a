/* dnsd._fastudp: the compiled half of the UDP loop (see dnsd/server.py).
 *
 * One Reader per UDP listen socket. Reader.serve() reads a batch of datagrams
 * with recvmmsg(2), answers those whose bytes after the ID are found in the
 * young generation of the handler's rendered-reply caches (the same lookups,
 * rotation and hit counting as Handler.handle's hot path, on the same Python
 * objects), hands every other datagram to a Python callback (the handler, so
 * a miss behaves exactly as without this module), and sends the batch's
 * replies with sendmmsg(2). A reply is the query's 2-byte ID followed by the
 * cached bytes, sent as two iovecs: nothing is concatenated or copied.
 *
 * Why C: per answer, the pure-Python loop spends more user CPU in the
 * interpreter (recvfrom's address tuple, the handler call, the reply's
 * concatenation, sendto's address parsing) than dnsmasq spends in all; and a
 * syscall per datagram each way costs kernel time a batch shares.
 *
 * On a wildcard address (pktinfo) each reply leaves from the address its
 * query came to, as in the Python loop. With the handler's latency histogram
 * on (--metrics), the replies answered here are timed into it too.
 *
 * The socket must be non-blocking. The GIL is held throughout: every syscall
 * here returns at once.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define MAX_BATCH 256
#define MAX_BUCKETS 64
/* Room for one IP_PKTINFO or IPV6_PKTINFO message (in6_pktinfo: 20 bytes),
   the control space the Python loop gives recvmsg too. */
#define CONTROL_SPACE CMSG_SPACE(20)

static PyObject *one;  /* the int 1 */
static PyObject *s_young, *s_old, *s_hits, *s_renders, *s_answer, *s_turn, *s_answers,
    *s_fill, *s_second, *s_tail, *s_allowed, *s_latency_counts, *s_latency_sum, *s_get;

typedef struct {
    PyObject_HEAD
    int fd;
    int batch;
    Py_ssize_t max_query;
    char *buffers;                   /* batch * max_query bytes */
    struct mmsghdr *rmsgs;           /* received datagrams */
    struct iovec *riov;
    struct sockaddr_storage *addrs;  /* their sources: the replies' destinations */
    struct mmsghdr *smsgs;           /* replies */
    struct iovec *siov;              /* two per reply: ID, then the rest */
    PyObject **keep;                 /* what each reply's iovecs point into, until sent */
    int pktinfo;                     /* a wildcard address: reply from the address asked */
    int v6;
    char *rcontrol;                  /* batch * CONTROL_SPACE: each datagram's pktinfo */
    char *scontrol;                  /* batch * CONTROL_SPACE: each reply's source */
    size_t *scontrol_len;            /* 0: no control message for this reply */
    Py_ssize_t served;               /* replies answered here without the callback */
    Py_ssize_t send_errors;          /* replies not sent for an error other than EAGAIN */
    int last_send_errno;
} Reader;

/* The caches' young dicts as the handler holds them now (new references). */
typedef struct {
    PyObject *replies, *forwarded, *allowed;     /* the ReplyCache objects */
    PyObject *young, *fyoung, *ayoung;           /* their young dicts, or NULL */
    int old_replies;                              /* the in-zone cache's old generation is not empty */
    /* The last client address found allowed to recurse: most datagrams of a
       batch come from one client, and until Python code runs again the
       answer cannot change. */
    int allowed_known;
    sa_family_t allowed_family;
    unsigned char allowed_addr[16];
    /* Timing (the handler's --metrics latency histogram), or stats == NULL. */
    PyObject *stats;
    int nbounds;
    double bounds[MAX_BUCKETS];
    long long counts[MAX_BUCKETS + 1];
    double seconds;
} Caches;

static void
caches_clear(Caches *c)
{
    Py_CLEAR(c->young);
    Py_CLEAR(c->fyoung);
    Py_CLEAR(c->ayoung);
}

static PyObject *
young_of(PyObject *cache)
{
    PyObject *young;
    if (cache == Py_None)
        return NULL;
    young = PyObject_GetAttr(cache, s_young);
    if (young != NULL && !PyDict_CheckExact(young)) {
        Py_DECREF(young);
        PyErr_SetString(PyExc_TypeError, "a reply cache's young generation must be a dict");
        return NULL;
    }
    return young;
}

/* Read the young dicts again: Python code that ran may have turned a generation. */
static int
caches_load(Caches *c)
{
    PyObject *old;
    Py_ssize_t n;
    caches_clear(c);
    c->old_replies = 0;
    c->allowed_known = 0;
    if (c->replies == Py_None)
        return 0;
    if ((c->young = young_of(c->replies)) == NULL)
        return -1;
    old = PyObject_GetAttr(c->replies, s_old);
    if (old == NULL)
        return -1;
    n = PyObject_Length(old);
    Py_DECREF(old);
    if (n < 0)
        return -1;
    c->old_replies = n > 0;
    if ((c->fyoung = young_of(c->forwarded)) == NULL && PyErr_Occurred())
        return -1;
    if ((c->ayoung = young_of(c->allowed)) == NULL && PyErr_Occurred())
        return -1;
    return 0;
}

static double
now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  /* time.perf_counter()'s clock */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The latency histogram's bucket bounds (QueryStats.observe's bisect_left). */
static int
timing_load(Caches *c, PyObject *stats, PyObject *buckets)
{
    PyObject *seq;
    Py_ssize_t n;
    c->stats = NULL;
    if (stats == Py_None)
        return 0;
    seq = PySequence_Fast(buckets, "latency buckets must be a sequence");
    if (seq == NULL)
        return -1;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_BUCKETS) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "too many latency buckets");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        c->bounds[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if (c->bounds[i] == -1.0 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    c->nbounds = (int)n;
    memset(c->counts, 0, sizeof(c->counts));
    c->seconds = 0.0;
    c->stats = stats;
    return 0;
}

static void
timing_observe(Caches *c, double seconds)
{
    int i = 0;
    while (i < c->nbounds && c->bounds[i] < seconds)
        i++;
    c->counts[i]++;
    c->seconds += seconds;
}

/* Add what was observed here to stats.latency_counts and stats.latency_sum. */
static int
timing_flush(Caches *c)
{
    PyObject *counts, *sum, *value;
    int rc = 0;
    if (c->stats == NULL)
        return 0;
    counts = PyObject_GetAttr(c->stats, s_latency_counts);
    if (counts == NULL)
        return -1;
    for (int i = 0; i <= c->nbounds && rc == 0; i++) {
        PyObject *item, *added, *more;
        if (!c->counts[i])
            continue;
        item = PySequence_GetItem(counts, i);
        more = item == NULL ? NULL : PyLong_FromLongLong(c->counts[i]);
        added = more == NULL ? NULL : PyNumber_Add(item, more);
        Py_XDECREF(item);
        Py_XDECREF(more);
        rc = added == NULL ? -1 : PySequence_SetItem(counts, i, added);
        Py_XDECREF(added);
        c->counts[i] = 0;
    }
    Py_DECREF(counts);
    if (rc < 0 || c->seconds == 0.0)
        return rc;
    sum = PyObject_GetAttr(c->stats, s_latency_sum);
    value = sum == NULL ? NULL : PyFloat_FromDouble(PyFloat_AsDouble(sum) + c->seconds);
    Py_XDECREF(sum);
    if (value == NULL || PyErr_Occurred()) {
        Py_XDECREF(value);
        return -1;
    }
    rc = PyObject_SetAttr(c->stats, s_latency_sum, value);
    Py_DECREF(value);
    c->seconds = 0.0;
    return rc;
}

static int
add_one(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name), *next;
    int rc;
    if (value == NULL)
        return -1;
    next = PyNumber_Add(value, one);
    Py_DECREF(value);
    if (next == NULL)
        return -1;
    rc = PyObject_SetAttr(obj, name, next);
    Py_DECREF(next);
    return rc;
}

/* CachedReply: count the hit, then its next rotation (CachedReply.next). */
static PyObject *
in_zone_reply(PyObject *entry)
{
    PyObject *renders, *answer, *turn, *next_turn, *answers, *body;
    Py_ssize_t count, nanswers, index;
    long long t;

    if (add_one(entry, s_hits) < 0)
        return NULL;
    renders = PyObject_GetAttr(entry, s_renders);
    if (renders == NULL)
        return NULL;
    if (!PyList_Check(renders)) {
        Py_DECREF(renders);
        PyErr_SetString(PyExc_TypeError, "CachedReply.renders must be a list");
        return NULL;
    }
    count = PyList_GET_SIZE(renders);
    if (count == 1) {
        body = PyList_GET_ITEM(renders, 0);
        Py_INCREF(body);
        Py_DECREF(renders);
        return body;
    }
    /* AnswerSet.next_turn: the counter is the answer set's, shared by every
       spelling of the question. */
    answer = PyObject_GetAttr(entry, s_answer);
    if (answer == NULL)
        goto fail_renders;
    turn = PyObject_GetAttr(answer, s_turn);
    if (turn == NULL)
        goto fail_answer;
    t = PyLong_AsLongLong(turn);
    next_turn = (t == -1 && PyErr_Occurred()) ? NULL : PyNumber_Add(turn, one);
    Py_DECREF(turn);
    if (next_turn == NULL)
        goto fail_answer;
    if (PyObject_SetAttr(answer, s_turn, next_turn) < 0) {
        Py_DECREF(next_turn);
        goto fail_answer;
    }
    Py_DECREF(next_turn);
    answers = PyObject_GetAttr(answer, s_answers);
    Py_DECREF(answer);
    if (answers == NULL)
        goto fail_renders;
    nanswers = PyObject_Length(answers);
    Py_DECREF(answers);
    if (nanswers < 0 || count < 1)
        goto fail_renders_count;
    index = nanswers ? (Py_ssize_t)(t % nanswers) : 0;
    if (index < 0)  /* Python's modulo is never negative */
        index += nanswers;
    index %= count;
    body = PyList_GET_ITEM(renders, index);
    if (body == Py_None) {
        PyObject *arg = PyLong_FromSsize_t(index);
        body = arg == NULL ? NULL : PyObject_CallMethodOneArg(entry, s_fill, arg);
        Py_XDECREF(arg);
    } else {
        Py_INCREF(body);
    }
    Py_DECREF(renders);
    return body;

fail_answer:
    Py_DECREF(answer);
fail_renders:
    Py_DECREF(renders);
    return NULL;
fail_renders_count:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "CachedReply without renders");
    Py_DECREF(renders);
    return NULL;
}

static PyObject *
host_of(const struct sockaddr_storage *addr)
{
    char text[INET6_ADDRSTRLEN];
    const void *raw = addr->ss_family == AF_INET6
        ? (const void *)&((const struct sockaddr_in6 *)addr)->sin6_addr
        : (const void *)&((const struct sockaddr_in *)addr)->sin_addr;
    if (inet_ntop(addr->ss_family, raw, text, sizeof(text)) == NULL)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyUnicode_FromString(text);
}

/* The address as the socket module gives it: (host, port), or for IPv6
   (host, port, flowinfo, scope_id). */
static PyObject *
address_of(const struct sockaddr_storage *addr)
{
    PyObject *host = host_of(addr);
    if (host == NULL)
        return NULL;
    if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)addr;
        return Py_BuildValue("(NiII)", host, ntohs(a->sin6_port), ntohl(a->sin6_flowinfo),
                             a->sin6_scope_id);
    }
    return Py_BuildValue("(Ni)", host, ntohs(((const struct sockaddr_in *)addr)->sin_port));
}

/* ForwardedReply: its bytes if they are this second's and the client may
   recurse (as the handler already found out); NULL with no error set when the
   handler must decide. */
static const unsigned char *
raw_address(const struct sockaddr_storage *addr, size_t *size)
{
    if (addr->ss_family == AF_INET6) {
        *size = 16;
        return ((const struct sockaddr_in6 *)addr)->sin6_addr.s6_addr;
    }
    *size = 4;
    return (const unsigned char *)&((const struct sockaddr_in *)addr)->sin_addr.s_addr;
}

/* Whether the handler already found this client allowed to recurse: 1 yes,
   0 not known here (the handler decides), -1 error. */
static int
client_allowed(Caches *c, const struct sockaddr_storage *addr)
{
    PyObject *host, *known, *flag;
    size_t size;
    const unsigned char *raw = raw_address(addr, &size);
    int ok;

    if (c->allowed_known && c->allowed_family == addr->ss_family
            && memcmp(c->allowed_addr, raw, size) == 0)
        return 1;
    host = host_of(addr);
    if (host == NULL)
        return -1;
    known = PyDict_GetItemWithError(c->ayoung, host);
    Py_DECREF(host);
    if (known == NULL)
        return PyErr_Occurred() ? -1 : 0;
    flag = PyObject_GetAttr(known, s_allowed);
    if (flag == NULL)
        return -1;
    ok = PyObject_IsTrue(flag);
    Py_DECREF(flag);
    if (ok == 1) {
        c->allowed_known = 1;
        c->allowed_family = addr->ss_family;
        memcpy(c->allowed_addr, raw, size);
    }
    return ok;
}

static PyObject *
forwarded_reply(PyObject *entry, Caches *c, const struct sockaddr_storage *addr)
{
    PyObject *second, *tail;
    struct timespec now;
    long long at;

    if (c->ayoung == NULL)
        return NULL;
    second = PyObject_GetAttr(entry, s_second);
    if (second == NULL)
        return NULL;
    at = PyLong_AsLongLong(second);
    Py_DECREF(second);
    if (at == -1 && PyErr_Occurred())
        return NULL;
    /* int(time.monotonic()): CPython reads the same clock. */
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (at != (long long)now.tv_sec)
        return NULL;
    if (client_allowed(c, addr) <= 0)
        return NULL;
    tail = PyObject_GetAttr(entry, s_tail);
    if (tail == NULL)
        return NULL;
    if (add_one(entry, s_hits) < 0) {
        Py_DECREF(tail);
        return NULL;
    }
    return tail;
}

/* A forwarded reply found in the young generation, or NULL (see forwarded_reply). */
static PyObject *
forwarded_lookup(Caches *c, PyObject *key, const struct sockaddr_storage *addr)
{
    PyObject *entry = PyDict_GetItemWithError(c->fyoung, key), *body;
    if (entry == NULL)
        return NULL;
    Py_INCREF(entry);
    body = forwarded_reply(entry, c, addr);
    Py_DECREF(entry);
    return body;
}

/* The reply to datagram i from the caches (a new reference to the bytes after
   the ID), or NULL: with an error set on failure, without when the handler
   must answer. */
static PyObject *
cached_reply(Caches *c, const char *data, Py_ssize_t size, Py_ssize_t key_limit,
             const struct sockaddr_storage *addr)
{
    PyObject *key, *entry, *body = NULL;
    if (c->young == NULL || size < 2 || size > key_limit)
        return NULL;
    key = PyBytes_FromStringAndSize(data + 2, size - 2);
    if (key == NULL)
        return NULL;
    entry = PyDict_GetItemWithError(c->young, key);
    if (entry != NULL) {
        Py_INCREF(entry);
        body = in_zone_reply(entry);
        Py_DECREF(entry);
    } else if (!PyErr_Occurred() && c->old_replies) {
        /* As the handler does: ReplyCache.get finds it in the old generation
           and makes it young again (which may turn the generations over). */
        entry = PyObject_CallMethodOneArg(c->replies, s_get, key);
        if (entry != NULL && caches_load(c) == 0) {
            if (entry != Py_None)
                body = in_zone_reply(entry);
            else if (c->fyoung != NULL)
                body = forwarded_lookup(c, key, addr);
        }
        Py_XDECREF(entry);
    } else if (!PyErr_Occurred() && c->fyoung != NULL) {
        body = forwarded_lookup(c, key, addr);
    }
    Py_DECREF(key);
    if (body != NULL && !PyBytes_Check(body)) {
        Py_DECREF(body);
        PyErr_SetString(PyExc_TypeError, "a cached reply must be bytes");
        return NULL;
    }
    return body;
}

/* The control message a reply to datagram i leaves with: from the address
   the query came to (RFC 1122 4.1.3.5), as the Python loop's _reply_cmsg
   builds it. Returns the message's length, 0 for none. */
static size_t
reply_control(Reader *self, int i)
{
    struct msghdr *hdr = &self->rmsgs[i].msg_hdr;
    char *out = self->scontrol + (size_t)i * CONTROL_SPACE;
    struct cmsghdr *cmsg;
    for (cmsg = CMSG_FIRSTHDR(hdr); cmsg != NULL; cmsg = CMSG_NXTHDR(hdr, cmsg)) {
        struct cmsghdr *reply = (struct cmsghdr *)out;
        if (!self->v6 && cmsg->cmsg_level == IPPROTO_IP && cmsg->cmsg_type == IP_PKTINFO
                && cmsg->cmsg_len >= CMSG_LEN(sizeof(struct in_pktinfo))) {
            struct in_pktinfo info;
            memset(out, 0, CONTROL_SPACE);
            memset(&info, 0, sizeof(info));
            info.ipi_spec_dst = ((const struct in_pktinfo *)CMSG_DATA(cmsg))->ipi_addr;
            reply->cmsg_level = IPPROTO_IP;
            reply->cmsg_type = IP_PKTINFO;
            reply->cmsg_len = CMSG_LEN(sizeof(info));
            memcpy(CMSG_DATA(reply), &info, sizeof(info));
            return CMSG_SPACE(sizeof(info));
        }
        if (self->v6 && cmsg->cmsg_level == IPPROTO_IPV6 && cmsg->cmsg_type == IPV6_PKTINFO
                && cmsg->cmsg_len >= CMSG_LEN(sizeof(struct in6_pktinfo))) {
            memset(out, 0, CONTROL_SPACE);
            reply->cmsg_level = IPPROTO_IPV6;
            reply->cmsg_type = IPV6_PKTINFO;
            reply->cmsg_len = CMSG_LEN(sizeof(struct in6_pktinfo));
            memcpy(CMSG_DATA(reply), CMSG_DATA(cmsg), sizeof(struct in6_pktinfo));
            return CMSG_SPACE(sizeof(struct in6_pktinfo));
        }
    }
    return 0;
}

/* The same as the Python loop's list of (level, type, data), for a reply the
   handler sends later. */
static PyObject *
control_list(Reader *self, int i)
{
    struct cmsghdr *cmsg = (struct cmsghdr *)(self->scontrol + (size_t)i * CONTROL_SPACE);
    if (self->scontrol_len[i] == 0)
        return PyList_New(0);
    return Py_BuildValue("[(iiy#)]", cmsg->cmsg_level, cmsg->cmsg_type,
                         (const char *)CMSG_DATA(cmsg),
                         (Py_ssize_t)(cmsg->cmsg_len - CMSG_LEN(0)));
}

/* Send the queued replies: what cannot go now (EAGAIN) is dropped, as a UDP
   server must; the client retries. */
static void
send_queued(Reader *self, int count)
{
    int done = 0;
    while (done < count) {
        int sent = sendmmsg(self->fd, self->smsgs + done, (unsigned int)(count - done),
                            MSG_DONTWAIT);
        if (sent > 0) {
            done += sent;
            continue;
        }
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            self->send_errors++;
            self->last_send_errno = errno;
        }
        done++;  /* this one failed: drop it, send the rest */
    }
    for (int i = 0; i < count; i++)
        Py_CLEAR(self->keep[i]);
}

static void
queue_reply(Reader *self, int *count, int from, PyObject *head, PyObject *body)
{
    int n = *count;
    struct msghdr *hdr = &self->smsgs[n].msg_hdr;
    struct iovec *iov = &self->siov[2 * n];
    hdr->msg_name = &self->addrs[from];
    hdr->msg_namelen = self->rmsgs[from].msg_hdr.msg_namelen;
    hdr->msg_iov = iov;
    if (self->pktinfo && self->scontrol_len[from]) {
        hdr->msg_control = self->scontrol + (size_t)from * CONTROL_SPACE;
        hdr->msg_controllen = self->scontrol_len[from];
    } else {
        hdr->msg_control = NULL;
        hdr->msg_controllen = 0;
    }
    hdr->msg_flags = 0;
    if (head == NULL) {  /* the query's ID, then the cached bytes */
        iov[0].iov_base = self->buffers + (Py_ssize_t)from * self->max_query;
        iov[0].iov_len = 2;
        iov[1].iov_base = PyBytes_AS_STRING(body);
        iov[1].iov_len = (size_t)PyBytes_GET_SIZE(body);
        hdr->msg_iovlen = 2;
    } else {  /* a whole reply from the handler */
        iov[0].iov_base = PyBytes_AS_STRING(head);
        iov[0].iov_len = (size_t)PyBytes_GET_SIZE(head);
        hdr->msg_iovlen = 1;
    }
    self->keep[n] = head != NULL ? head : body;  /* the reference is handed over */
    *count = n + 1;
}

PyDoc_STRVAR(serve_doc,
"serve(budget, replies, forwarded, allowed, key_limit, fallback, stats, buckets) -> int\n\n"
"Read and answer at most budget datagrams; return how many were read.\n"
"replies, forwarded, allowed: the handler's UDP reply caches (ReplyCache), or\n"
"replies=None to hand every datagram to fallback(data, address[, control]),\n"
"which returns the reply bytes to send or None (control: on a pktinfo reader,\n"
"the reply's control messages). stats: a QueryStats whose latency histogram\n"
"(bounds: buckets) counts the replies answered here, or None.");

static PyObject *
Reader_serve(Reader *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t budget, key_limit, total = 0;
    PyObject *fallback;
    Caches c = {0};
    int failed = 0;

    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "serve() takes 8 arguments");
        return NULL;
    }
    if (self->fd < 0) {
        PyErr_SetString(PyExc_ValueError, "the reader is closed");
        return NULL;
    }
    budget = PyLong_AsSsize_t(args[0]);
    key_limit = PyLong_AsSsize_t(args[4]);
    if ((budget == -1 || key_limit == -1) && PyErr_Occurred())
        return NULL;
    c.replies = args[1];
    c.forwarded = args[2];
    c.allowed = args[3];
    fallback = args[5];
    if (caches_load(&c) < 0 || timing_load(&c, args[6], args[7]) < 0)
        goto error;

    while (total < budget && !failed) {
        int want = (int)(budget - total < self->batch ? budget - total : self->batch);
        int got, queued = 0;
        for (int i = 0; i < want; i++) {
            struct msghdr *hdr = &self->rmsgs[i].msg_hdr;
            hdr->msg_namelen = sizeof(struct sockaddr_storage);
            if (self->pktinfo) {
                hdr->msg_control = self->rcontrol + (size_t)i * CONTROL_SPACE;
                hdr->msg_controllen = CONTROL_SPACE;
            } else {
                hdr->msg_control = NULL;
                hdr->msg_controllen = 0;
            }
            hdr->msg_flags = 0;
        }
        got = recvmmsg(self->fd, self->rmsgs, (unsigned int)want, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            PyErr_SetFromErrno(PyExc_OSError);
            goto error;
        }
        total += got;
        for (int i = 0; i < got; i++) {
            const char *data = self->buffers + (Py_ssize_t)i * self->max_query;
            Py_ssize_t size = (Py_ssize_t)self->rmsgs[i].msg_len;
            PyObject *body, *packet, *address, *reply;
            double started = c.stats != NULL ? now_seconds() : 0.0;
            if (self->pktinfo)
                self->scontrol_len[i] = reply_control(self, i);
            body = cached_reply(&c, data, size, key_limit, &self->addrs[i]);
            if (body != NULL) {
                queue_reply(self, &queued, i, NULL, body);
                self->served++;
                if (c.stats != NULL)
                    timing_observe(&c, now_seconds() - started);
                continue;
            }
            if (PyErr_Occurred()) {
                failed = 1;
                break;
            }
            packet = PyBytes_FromStringAndSize(data, size);
            address = packet == NULL ? NULL : address_of(&self->addrs[i]);
            if (address != NULL && self->pktinfo) {
                PyObject *control = control_list(self, i);
                reply = control == NULL ? NULL
                    : PyObject_CallFunctionObjArgs(fallback, packet, address, control, NULL);
                Py_XDECREF(control);
            } else {
                reply = address == NULL ? NULL
                    : PyObject_CallFunctionObjArgs(fallback, packet, address, NULL);
            }
            Py_XDECREF(packet);
            Py_XDECREF(address);
            if (reply == NULL || caches_load(&c) < 0) {
                Py_XDECREF(reply);
                failed = 1;
                break;
            }
            if (PyBytes_Check(reply))
                queue_reply(self, &queued, i, reply, NULL);
            else
                Py_DECREF(reply);
        }
        send_queued(self, queued);
        if (got < want)
            break;  /* drained: the event loop calls again when more comes */
    }
    if (failed)
        goto error;
    caches_clear(&c);
    if (timing_flush(&c) < 0)
        return NULL;
    return PyLong_FromSsize_t(total);

error:
    caches_clear(&c);
    if (c.stats != NULL) {  /* keep what was observed; the first error wins */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (timing_flush(&c) < 0)
            PyErr_Clear();
        PyErr_Restore(type, value, tb);
    }
    return NULL;
}

static PyObject *
Reader_close(Reader *self, PyObject *Py_UNUSED(ignored))
{
    self->fd = -1;  /* the socket object owns the descriptor; only forget it */
    Py_RETURN_NONE;
}

static PyObject *
Reader_take_errors(Reader *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *result = Py_BuildValue("(ni)", self->send_errors, self->last_send_errno);
    self->send_errors = 0;
    self->last_send_errno = 0;
    return result;
}

static PyObject *
Reader_get_served(Reader *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->served);
}

static void
Reader_free_buffers(Reader *self)
{
    if (self->keep != NULL) {
        for (int i = 0; i < self->batch; i++)
            Py_CLEAR(self->keep[i]);
    }
    PyMem_Free(self->buffers);
    PyMem_Free(self->rmsgs);
    PyMem_Free(self->riov);
    PyMem_Free(self->addrs);
    PyMem_Free(self->smsgs);
    PyMem_Free(self->siov);
    PyMem_Free(self->keep);
    PyMem_Free(self->rcontrol);
    PyMem_Free(self->scontrol);
    PyMem_Free(self->scontrol_len);
    self->rcontrol = NULL;
    self->scontrol = NULL;
    self->scontrol_len = NULL;
    self->buffers = NULL;
    self->rmsgs = NULL;
    self->riov = NULL;
    self->addrs = NULL;
    self->smsgs = NULL;
    self->siov = NULL;
    self->keep = NULL;
}

static int
Reader_init(Reader *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "batch", "max_query", "pktinfo", "v6", NULL};
    int fd, batch = 32, pktinfo = 0, v6 = 0;
    Py_ssize_t max_query = 4096;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|inpp", kwlist, &fd, &batch, &max_query,
                                     &pktinfo, &v6))
        return -1;
    if (fd < 0 || batch < 1 || batch > MAX_BATCH || max_query < 12) {
        PyErr_SetString(PyExc_ValueError, "Reader: bad fd, batch or max_query");
        return -1;
    }
    Reader_free_buffers(self);
    self->fd = fd;
    self->batch = batch;
    self->max_query = max_query;
    self->pktinfo = pktinfo;
    self->v6 = v6;
    self->buffers = PyMem_Malloc((size_t)batch * (size_t)max_query);
    self->rmsgs = PyMem_Calloc((size_t)batch, sizeof(struct mmsghdr));
    self->riov = PyMem_Calloc((size_t)batch, sizeof(struct iovec));
    self->addrs = PyMem_Calloc((size_t)batch, sizeof(struct sockaddr_storage));
    self->smsgs = PyMem_Calloc((size_t)batch, sizeof(struct mmsghdr));
    self->siov = PyMem_Calloc(2 * (size_t)batch, sizeof(struct iovec));
    self->keep = PyMem_Calloc((size_t)batch, sizeof(PyObject *));
    self->rcontrol = PyMem_Calloc((size_t)batch, CONTROL_SPACE);
    self->scontrol = PyMem_Calloc((size_t)batch, CONTROL_SPACE);
    self->scontrol_len = PyMem_Calloc((size_t)batch, sizeof(size_t));
    if (!self->rcontrol || !self->scontrol || !self->scontrol_len || !self->buffers || !self->rmsgs || !self->riov || !self->addrs || !self->smsgs
            || !self->siov || !self->keep) {
        Reader_free_buffers(self);
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < batch; i++) {
        struct msghdr *hdr = &self->rmsgs[i].msg_hdr;
        self->riov[i].iov_base = self->buffers + (Py_ssize_t)i * max_query;
        self->riov[i].iov_len = (size_t)max_query;
        hdr->msg_name = &self->addrs[i];
        hdr->msg_iov = &self->riov[i];
        hdr->msg_iovlen = 1;
    }
    return 0;
}

static void
Reader_dealloc(Reader *self)
{
    Reader_free_buffers(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Reader_methods[] = {
    {"serve", (PyCFunction)(void (*)(void))Reader_serve, METH_FASTCALL, serve_doc},
    {"close", (PyCFunction)Reader_close, METH_NOARGS,
     "Forget the descriptor (the socket object closes it)."},
    {"take_errors", (PyCFunction)Reader_take_errors, METH_NOARGS,
     "(count, errno) of replies not sent since the last call, for an error other than EAGAIN."},
    {NULL, NULL, 0, NULL},
};

static PyObject *
Reader_get_send_errors(Reader *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->send_errors);
}

static PyGetSetDef Reader_getset[] = {
    {"send_errors", (getter)Reader_get_send_errors, NULL,
     "replies not sent since take_errors() was last called", NULL},
    {"served", (getter)Reader_get_served, NULL,
     "replies answered from the caches here, without the fallback", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dnsd._fastudp.Reader",
    .tp_doc = PyDoc_STR("Reader(fd, batch=32, max_query=4096, pktinfo=False, v6=False): "
                        "one UDP socket's batched loop."),
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Reader_init,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_methods = Reader_methods,
    .tp_getset = Reader_getset,
};

static struct PyModuleDef fastudp_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "dnsd._fastudp",
    .m_doc = PyDoc_STR("The compiled half of dnsd's UDP loop: batched receive, cached "
                       "replies, batched send. dnsd runs without it (DNSD_PURE_PYTHON=1 "
                       "or when it is not built)."),
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__fastudp(void)
{
    PyObject *module;
    struct { PyObject **slot; const char *text; } names[] = {
        {&s_young, "young"}, {&s_old, "old"}, {&s_hits, "hits"}, {&s_renders, "renders"},
        {&s_answer, "answer"}, {&s_turn, "_turn"}, {&s_answers, "answers"}, {&s_fill, "fill"},
        {&s_second, "second"}, {&s_tail, "tail"}, {&s_allowed, "allowed"},
        {&s_latency_counts, "latency_counts"}, {&s_latency_sum, "latency_sum"},
        {&s_get, "get"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return NULL;
    }
    if (one == NULL && (one = PyLong_FromLong(1)) == NULL)
        return NULL;
    if (PyType_Ready(&ReaderType) < 0)
        return NULL;
    module = PyModule_Create(&fastudp_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&ReaderType);
    if (PyModule_AddObject(module, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(&ReaderType);
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "MAX_BATCH", MAX_BATCH) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
