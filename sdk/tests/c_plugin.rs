//! The header is the contract: a C plugin written against `include/huddle_plugin.h` alone is
//! compiled with the system C compiler, loaded through the SDK's loader (the code the server
//! uses) and driven through the FakeHost's host table; the C and Rust layouts of every ABI
//! struct are compared field by field; and broken libraries (garbage, no symbol, another ABI
//! major, a short descriptor, missing callbacks, missing capabilities) are refused with errors
//! that name the file and the mismatch.
#![allow(unsafe_code)]

use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use huddle_sdk::abi::{
    HuddleClaim, HuddleField, HuddleHeader, HuddleHostApi, HuddleHostBuf, HuddlePluginDescriptor,
    HuddleRegistrationEvent, HuddleRequestInfo, HuddleRequestParts, HuddleRtpOut,
    HuddleStatusResponse, HuddleStoreOp,
};
use huddle_sdk::fake::{sample_request, FakeHost};
use huddle_sdk::hosting::DescriptorError;
use huddle_sdk::loader::{load, LoadError, LoadedPlugin};
use huddle_sdk::{Capabilities, Claim, Error, Level, Message};

fn sdk_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".to_owned())
}

/// Compiles `source` (in tests/c_plugin) into a shared library in `dir`.
fn build_library(dir: &Path, source: &str, name: &str, defines: &[&str], strict: bool) -> PathBuf {
    let out = dir.join(format!("lib{name}.{}", std::env::consts::DLL_EXTENSION));
    let mut cmd = Command::new(cc());
    cmd.args(["-std=c99", "-shared", "-fPIC", "-Wall", "-Wextra"]);
    if strict {
        cmd.args(["-pedantic", "-Werror"]);
    }
    cmd.arg("-I")
        .arg(sdk_dir().join("include"))
        .arg("-o")
        .arg(&out)
        .arg(sdk_dir().join("tests/c_plugin").join(source));
    for d in defines {
        cmd.arg(format!("-D{d}"));
    }
    let output = cmd.output().expect("a C compiler (cc) is installed");
    assert!(
        output.status.success(),
        "compiling {source} {defines:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

fn load_for(path: &Path, host: &FakeHost) -> Result<LoadedPlugin, LoadError> {
    use huddle_sdk::hosting::HostServices;
    // SAFETY: the libraries are built by this test from its own sources.
    unsafe { load(path, host.capabilities()) }
}

#[test]
fn c_plugin_loads_claims_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = build_library(dir.path(), "echo.c", "c_echo", &[], true);
    let host = FakeHost::new();
    let loaded = load_for(&path, &host).expect("the C plugin loads");
    let info = loaded.info();
    assert_eq!(info.name, "c-echo");
    assert_eq!(info.version, "1.0.0");
    assert_eq!(
        (info.abi_major, info.abi_minor),
        (1, huddle_sdk::abi::HUDDLE_PLUGIN_ABI_MINOR)
    );
    assert_eq!(info.capabilities, Capabilities::STORE);
    assert_eq!(
        loaded.entry().raw().struct_size,
        size_of::<HuddlePluginDescriptor>(),
        "C and Rust agree on the descriptor's size"
    );

    let mut plugin = host.start(loaded.entry(), "").expect("init succeeds");
    assert_eq!(plugin.claims(), &[Claim::user("c-*")]);
    assert!(host.logged(Level::Info, "c-echo ready"));

    for expected_count in ["1", "2"] {
        let request = sample_request("MESSAGE", "sip:c-echo@example.test", "hello");
        let sent = Message::parse(request.clone()).unwrap();
        let txn = plugin
            .request(&request)
            .expect("the C plugin takes the request");
        let response = host.final_response(txn).expect("answered");
        assert_eq!(response.status(), 200);
        assert!(!response.synthetic);
        assert_eq!(response.message.call_id(), sent.call_id());
        assert_eq!(response.message.to_header().unwrap().tag(), Some("c0ffee"));
        assert_eq!(
            host.get("", b"count").as_deref(),
            Some(expected_count.as_bytes()),
            "the C plugin's store_get/free_buf/store_put round trip"
        );
    }
    // Not claimed: the host would not route it here.
    let other = sample_request("MESSAGE", "sip:bob@example.test", "hi");
    assert_eq!(plugin.request(&other), Err(Error::NotFound));
    drop(plugin); // destroy() runs in C
}

/// Every ABI struct has the same size and field offsets in C (from the header) as in Rust.
#[test]
fn c_and_rust_layouts_agree() {
    macro_rules! layout {
        ($($ty:ident { $($field:ident),* $(,)? })*) => {
            vec![$(
                (stringify!($ty), size_of::<$ty>(), vec![$((stringify!($field), offset_of!($ty, $field))),*]),
            )*]
        };
    }
    let structs = layout! {
        HuddleHostBuf { ptr, len, token }
        HuddleClaim { struct_size, method, method_len, event, event_len, user, user_len, flags }
        HuddleRequestInfo {
            struct_size, transport, source_port, source_ip, source_ip_len, auth_user,
            auth_user_len, related_txn, source_family, source_addr, fields, fields_len,
            start_line_end, headers_end, body_start, body_end
        }
        HuddleField { line_start, line_end, value_start, value_end }
        HuddleHeader { name, name_len, value, value_len }
        HuddleRequestParts {
            struct_size, method, method_len, uri, uri_len, headers, headers_len, body, body_len
        }
        HuddleStatusResponse { struct_size, status, reason, reason_len, headers, headers_len }
        HuddleRegistrationEvent { struct_size, kind, bindings, aor, aor_len }
        HuddleStoreOp { op, key, key_len, value, value_len }
        HuddleRtpOut { session, mid, mid_len, packet, len }
        HuddlePluginDescriptor {
            abi_major, abi_minor, struct_size, name, version, capabilities, init, destroy,
            handle_request, handle_response, on_timer, on_store_change, on_registration,
            media_ready, incoming_rtp, incoming_rtcp, media_hangup, media_bitrate, admin_request
        }
        HuddleHostApi {
            abi_major, abi_minor, struct_size, host_capabilities, ctx, free_buf, log, claim,
            respond, send_request, store_get, store_put, store_delete, store_cas, store_scan,
            store_watch, store_unwatch, set_timer, cancel_timer, media_answer, media_send_rtp,
            media_send_rtcp, media_request_keyframe, media_forward, media_close, emit_event,
            media_tap, store_batch, retarget, user_exists, media_rtp_sink, media_send_rtp_batch,
            event_wanted, send_request_parts, mem_alloc, mem_alloc_zeroed, mem_dealloc,
            mem_realloc, respond_status
        }
    };
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"huddle_plugin.h\"\nint main(void) {\n",
    );
    let mut expected = String::new();
    for (ty, size, fields) in &structs {
        c.push_str(&format!("  printf(\"{ty} %zu\\n\", sizeof({ty}));\n"));
        expected.push_str(&format!("{ty} {size}\n"));
        for (field, offset) in fields {
            c.push_str(&format!(
                "  printf(\"{ty}.{field} %zu\\n\", offsetof({ty}, {field}));\n"
            ));
            expected.push_str(&format!("{ty}.{field} {offset}\n"));
        }
    }
    c.push_str("  return 0;\n}\n");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("layout.c");
    std::fs::write(&src, c).unwrap();
    let exe = dir.path().join("layout");
    let out = Command::new(cc())
        .args(["-std=c99", "-Wall", "-Werror", "-I"])
        .arg(sdk_dir().join("include"))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("a C compiler (cc) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), expected);
}

fn refused(dir: &Path, name: &str, defines: &[&str], host: &FakeHost) -> (PathBuf, LoadError) {
    let path = build_library(dir, "variants.c", name, defines, false);
    match load_for(&path, host) {
        Ok(p) => panic!("{defines:?} was loaded: {:?}", p.info()),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains(&*path.to_string_lossy()),
                "the error names the file: {text}"
            );
            assert_eq!(e.path(), path);
            (path, e)
        }
    }
}

#[test]
fn broken_libraries_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let host = FakeHost::new();

    // Not a library at all.
    let garbage = dir.path().join("libgarbage.so");
    std::fs::write(
        &garbage,
        b"\x7fELF? no: just some bytes that are not a shared object",
    )
    .unwrap();
    let err = load_for(&garbage, &host).unwrap_err();
    assert!(matches!(err, LoadError::NotALibrary { .. }), "{err}");
    assert!(err.to_string().contains("libgarbage.so"), "{err}");
    assert!(
        err.to_string().contains("not a loadable shared library"),
        "{err}"
    );

    // No file.
    let err = load_for(&dir.path().join("absent.so"), &host).unwrap_err();
    assert!(matches!(err, LoadError::Unreadable { .. }), "{err}");
    assert!(err.to_string().contains("absent.so"), "{err}");

    // A library, but not a plugin.
    let (_, err) = refused(dir.path(), "nosym", &["NO_SYMBOL"], &host);
    assert!(
        matches!(
            err,
            LoadError::MissingSymbol {
                other_major: None,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("huddle_plugin_entry_v1"), "{err}");
    assert!(err.to_string().contains("not a Huddle plugin"), "{err}");

    // A plugin for ABI 2: only huddle_plugin_entry_v2.
    let (_, err) = refused(dir.path(), "future", &["FUTURE_MAJOR"], &host);
    assert!(
        matches!(
            err,
            LoadError::MissingSymbol {
                other_major: Some(2),
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("built for plugin ABI major 2"),
        "{err}"
    );

    // The v1 symbol, but a descriptor claiming ABI 2.
    let (_, err) = refused(dir.path(), "badmajor", &["BAD_MAJOR"], &host);
    assert!(
        matches!(
            err,
            LoadError::Incompatible {
                source: DescriptorError::AbiMajor {
                    found_major: 2,
                    expected: 1,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("built for plugin ABI 2.0, but this host speaks ABI 1.x"),
        "{err}"
    );

    // A descriptor smaller than the 1.0 layout.
    let (_, err) = refused(dir.path(), "small", &["TOO_SMALL"], &host);
    assert!(
        matches!(
            err,
            LoadError::Incompatible {
                source: DescriptorError::TooSmall {
                    struct_size: 16,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );

    // Requires media, which this host (like the server today) lacks.
    let (_, err) = refused(dir.path(), "media", &["NEEDS_MEDIA"], &host);
    assert!(
        err.to_string()
            .contains("requires capabilities this host does not provide: media"),
        "{err}"
    );
    // ... and a host with media loads it (a newer host, same major).
    let media_host = FakeHost::with_capabilities(Capabilities::ALL);
    let path = build_library(dir.path(), "variants.c", "media2", &["NEEDS_MEDIA"], false);
    assert!(load_for(&path, &media_host).is_ok());

    // Mandatory callbacks.
    let (_, err) = refused(dir.path(), "nohandler", &["NO_HANDLER"], &host);
    assert!(
        err.to_string()
            .contains("mandatory callback `handle_request` is missing (always required)"),
        "{err}"
    );
    let (_, err) = refused(dir.path(), "notimer", &["NEEDS_TIMERS_NO_CALLBACK"], &host);
    assert!(
        err.to_string()
            .contains("`on_timer` is missing (required by capability timers)"),
        "{err}"
    );

    // A name that cannot name a namespace.
    let (_, err) = refused(dir.path(), "badname", &["BAD_NAME"], &host);
    assert!(err.to_string().contains("invalid plugin name"), "{err}");

    // The well-formed variant loads (the refusals above are about what they break).
    let path = build_library(dir.path(), "variants.c", "fine", &[], false);
    assert_eq!(load_for(&path, &host).unwrap().info().name, "variant");
}
