/*
 * A minimal Huddle plugin in C, written against include/huddle_plugin.h only: it claims every
 * request to a Request-URI user starting with "c-", answers each with 200 OK, and counts them
 * in its store namespace (key "count"), which exercises a host buffer's ownership round trip
 * (store_get lends a buffer, free_buf gives it back).
 *
 * tests/c_plugin.rs compiles it into a shared library, loads it with the SDK's loader and
 * drives it through the FakeHost: the header is the contract.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stddef.h>
#include "huddle_plugin.h"

typedef struct {
    const HuddleHostApi *host; /* owned by the host, valid until destroy returns */
    unsigned long answered;
} Instance;

static void say(const HuddleHostApi *host, uint32_t level, const char *text) {
    host->log(host->ctx, level, (const uint8_t *)text, strlen(text));
}

static int32_t c_init(const HuddleHostApi *host, const uint8_t *config, size_t config_len,
                      void **out_instance) {
    (void)config;
    (void)config_len;
    if (host->abi_major != HUDDLE_PLUGIN_ABI_MAJOR || host->struct_size < sizeof(HuddleHostApi)) {
        return HUDDLE_ERR_INCOMPATIBLE;
    }
    static const char user[] = "c-*";
    /* Sized as a 1.1 plugin knows the struct (no `flags`): the host must still accept it. */
    HuddleClaim claim = {offsetof(HuddleClaim, flags), NULL, 0, NULL, 0, (const uint8_t *)user,
                         sizeof(user) - 1, 0};
    int32_t rc = host->claim(host->ctx, &claim);
    if (rc != HUDDLE_OK) {
        return rc;
    }
    Instance *inst = calloc(1, sizeof(Instance));
    if (inst == NULL) {
        return HUDDLE_ERR_INTERNAL;
    }
    inst->host = host;
    *out_instance = inst;
    say(host, HUDDLE_LOG_INFO, "c-echo ready");
    return HUDDLE_OK;
}

static void c_destroy(void *instance) { free(instance); }

/* Copies the header line starting with `name` (case-sensitive, full form) into out. */
static size_t copy_header(const char *msg, size_t len, const char *name, char *out, size_t cap,
                          const char *suffix) {
    size_t n = strlen(name);
    for (size_t i = 0; i + n < len; i++) {
        if ((i == 0 || msg[i - 1] == '\n') && strncmp(msg + i, name, n) == 0) {
            size_t end = i;
            while (end < len && msg[end] != '\r' && msg[end] != '\n') {
                end++;
            }
            int w = snprintf(out, cap, "%.*s%s\r\n", (int)(end - i), msg + i, suffix);
            return (w > 0 && (size_t)w < cap) ? (size_t)w : 0;
        }
    }
    return 0;
}

/* Reads "count" from the store (host buffer: free it), adds one, writes it back. */
static void bump_count(const HuddleHostApi *host) {
    if (host->store_get == NULL || host->store_put == NULL) {
        return;
    }
    unsigned long count = 0;
    HuddleHostBuf buf = {NULL, 0, NULL};
    if (host->store_get(host->ctx, NULL, 0, (const uint8_t *)"count", 5, &buf) == HUDDLE_OK) {
        char text[32] = {0};
        memcpy(text, buf.ptr, buf.len < sizeof(text) - 1 ? buf.len : sizeof(text) - 1);
        count = strtoul(text, NULL, 10);
        host->free_buf(host->ctx, buf);
    }
    char text[32];
    int w = snprintf(text, sizeof(text), "%lu", count + 1);
    host->store_put(host->ctx, (const uint8_t *)"count", 5, (const uint8_t *)text, (size_t)w);
}

static int32_t c_handle_request(void *instance, uint64_t txn, const uint8_t *msg, size_t len,
                                const HuddleRequestInfo *info) {
    Instance *inst = instance;
    (void)info;
    if (txn == 0) {
        return HUDDLE_OK; /* ACK or CANCEL: nothing to answer */
    }
    const char *m = (const char *)msg;
    char out[4096];
    size_t used = (size_t)snprintf(out, sizeof(out), "SIP/2.0 200 OK\r\n");
    const char *copied[] = {"Via:", "From:", "Call-ID:", "CSeq:"};
    for (size_t i = 0; i < sizeof(copied) / sizeof(copied[0]); i++) {
        used += copy_header(m, len, copied[i], out + used, sizeof(out) - used, "");
    }
    used += copy_header(m, len, "To:", out + used, sizeof(out) - used, ";tag=c0ffee");
    used += (size_t)snprintf(out + used, sizeof(out) - used, "Content-Length: 0\r\n\r\n");
    bump_count(inst->host);
    inst->answered++;
    return inst->host->respond(inst->host->ctx, txn, (const uint8_t *)out, used);
}

static const HuddlePluginDescriptor DESCRIPTOR = {
    .abi_major = HUDDLE_PLUGIN_ABI_MAJOR,
    .abi_minor = HUDDLE_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(HuddlePluginDescriptor),
    .name = "c-echo",
    .version = "1.0.0",
    .capabilities = HUDDLE_CAP_STORE,
    .init = c_init,
    .destroy = c_destroy,
    .handle_request = c_handle_request,
    /* every other callback stays NULL: none of its capabilities is required */
};

const HuddlePluginDescriptor *huddle_plugin_entry_v1(void) { return &DESCRIPTOR; }
