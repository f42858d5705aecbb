/*
 * Broken plugins, one per -D flag, for the loader's refusal tests (tests/c_plugin.rs):
 *   -DBAD_MAJOR        exports huddle_plugin_entry_v1 but the descriptor says ABI 2.0
 *   -DFUTURE_MAJOR     exports only huddle_plugin_entry_v2 (a plugin built for ABI 2)
 *   -DNO_SYMBOL        a shared library with no entry symbol at all
 *   -DTOO_SMALL        struct_size smaller than the 1.0 layout
 *   -DNEEDS_MEDIA      requires HUDDLE_CAP_MEDIA (with the media callbacks)
 *   -DNO_HANDLER       handle_request is NULL
 *   -DNEEDS_TIMERS_NO_CALLBACK  requires HUDDLE_CAP_TIMERS but has no on_timer
 *   -DBAD_NAME         a name that cannot name a store namespace
 */
#include <stddef.h>

#include "huddle_plugin.h"

static int32_t v_init(const HuddleHostApi *host, const uint8_t *config, size_t config_len,
                      void **out_instance) {
    (void)host;
    (void)config;
    (void)config_len;
    *out_instance = NULL;
    return HUDDLE_OK;
}
static void v_destroy(void *instance) { (void)instance; }
static int32_t v_request(void *instance, uint64_t txn, const uint8_t *msg, size_t len,
                         const HuddleRequestInfo *info) {
    (void)instance;
    (void)txn;
    (void)msg;
    (void)len;
    (void)info;
    return HUDDLE_OK;
}
static int32_t v_ready(void *instance, uint64_t session) {
    (void)instance;
    (void)session;
    return HUDDLE_OK;
}
static int32_t v_rtp(void *instance, uint64_t session, const uint8_t *mid, size_t mid_len,
                     const uint8_t *packet, size_t len) {
    (void)instance;
    (void)session;
    (void)mid;
    (void)mid_len;
    (void)packet;
    (void)len;
    return HUDDLE_OK;
}
static int32_t v_rtcp(void *instance, uint64_t session, const uint8_t *packet, size_t len) {
    (void)instance;
    (void)session;
    (void)packet;
    (void)len;
    return HUDDLE_OK;
}
static int32_t v_hangup(void *instance, uint64_t session, uint32_t reason) {
    (void)instance;
    (void)session;
    (void)reason;
    return HUDDLE_OK;
}

static const HuddlePluginDescriptor DESCRIPTOR = {
#ifdef BAD_MAJOR
    .abi_major = 2,
#else
    .abi_major = HUDDLE_PLUGIN_ABI_MAJOR,
#endif
    .abi_minor = 0,
#ifdef TOO_SMALL
    .struct_size = 16,
#else
    .struct_size = sizeof(HuddlePluginDescriptor),
#endif
#ifdef BAD_NAME
    .name = "no/slashes",
#else
    .name = "variant",
#endif
    .version = "0.0.1",
#if defined(NEEDS_MEDIA)
    .capabilities = HUDDLE_CAP_MEDIA,
#elif defined(NEEDS_TIMERS_NO_CALLBACK)
    .capabilities = HUDDLE_CAP_TIMERS,
#else
    .capabilities = 0,
#endif
    .init = v_init,
    .destroy = v_destroy,
#ifndef NO_HANDLER
    .handle_request = v_request,
#endif
    .media_ready = v_ready,
    .incoming_rtp = v_rtp,
    .incoming_rtcp = v_rtcp,
    .media_hangup = v_hangup,
};

#if defined(NO_SYMBOL)
int huddle_something_else(void) { return 42; }
#elif defined(FUTURE_MAJOR)
const HuddlePluginDescriptor *huddle_plugin_entry_v2(void) { return &DESCRIPTOR; }
#else
const HuddlePluginDescriptor *huddle_plugin_entry_v1(void) { return &DESCRIPTOR; }
#endif
