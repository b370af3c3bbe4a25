//! The API's request parser: any method, path and body. Accepted requests
//! must be consistent with their input (a drive's or a network
//! interface's id is the one in the path) and round-trip through their
//! JSON form; the config-file parser gets the same bytes.

#![no_main]

use kindling_api::config_file::parse_config;
use kindling_api::{parse_request, ApiRequest, Method};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_config(data);
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let method = match selector % 4 {
        0 => Method::Get,
        1 => Method::Put,
        2 => Method::Patch,
        _ => {
            // The method name itself from the input.
            let name = String::from_utf8_lossy(rest.split(|&b| b == b' ').next().unwrap_or(&[]));
            match Method::parse(&name) {
                Ok(m) => m,
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    return;
                }
            }
        }
    };
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let path = String::from_utf8_lossy(&rest[..split]);
    let body = rest.get(split + 1..).unwrap_or(&[]);
    match parse_request(method, &path, body) {
        Ok(ApiRequest::PutDrive(drive)) => {
            assert_eq!(path.strip_prefix("/drives/"), Some(drive.drive_id.as_str()));
            let json = serde_json::to_vec(&drive).unwrap();
            let again = parse_request(method, &path, &json).unwrap();
            assert_eq!(again, ApiRequest::PutDrive(drive));
        }
        Ok(ApiRequest::PatchDrive(drive)) => {
            assert_eq!(path.strip_prefix("/drives/"), Some(drive.drive_id.as_str()));
        }
        Ok(ApiRequest::PutNetworkInterface(iface)) => {
            assert_eq!(
                path.strip_prefix("/network-interfaces/"),
                Some(iface.iface_id.as_str())
            );
            let json = serde_json::to_vec(&iface).unwrap();
            let again = parse_request(method, &path, &json).unwrap();
            assert_eq!(again, ApiRequest::PutNetworkInterface(iface));
        }
        Ok(ApiRequest::PatchNetworkInterface(iface)) => {
            assert_eq!(
                path.strip_prefix("/network-interfaces/"),
                Some(iface.iface_id.as_str())
            );
        }
        Ok(ApiRequest::PutVsock(vsock)) => {
            let json = serde_json::to_vec(&vsock).unwrap();
            let again = parse_request(method, &path, &json).unwrap();
            assert_eq!(again, ApiRequest::PutVsock(vsock));
        }
        Ok(ApiRequest::PutMachineConfig(config)) => {
            let json = serde_json::to_vec(&config).unwrap();
            let again = parse_request(method, &path, &json).unwrap();
            assert_eq!(again, ApiRequest::PutMachineConfig(config));
        }
        Ok(ApiRequest::PutBootSource(boot)) => {
            let json = serde_json::to_vec(&boot).unwrap();
            assert_eq!(
                parse_request(method, &path, &json).unwrap(),
                ApiRequest::PutBootSource(boot)
            );
        }
        Ok(_) => assert!(body.len() <= kindling_api::MAX_BODY_BYTES),
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty());
            // Messages quote attacker input only in bounded pieces.
            assert!(message.len() < 4096 + body.len().min(1024), "{message}");
        }
    }
});
