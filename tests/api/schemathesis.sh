#!/usr/bin/env bash
# Firecracker's OpenAPI document as the oracle for Kindling's API: runs
# schemathesis (property-based, bounded in time) against `microvm
# --api-sock` through a local TCP-to-Unix-socket forwarder, in two passes:
#
# 1. every operation, schema-valid and schema-invalid requests: no 5xx,
#    every status code documented, responses (bodies, headers, content
#    types) valid against the document;
# 2. schema-invalid requests must be refused with a 4xx (the document's
#    bodies are never looser than Kindling's), except for PATCH
#    /machine-config, whose document reuses the PUT schema with its
#    required fields while Firecracker (and Kindling) accept any subset.
#
# Checks left out on purpose: positive_data_acceptance (valid-looking
# bodies name files that do not exist, and resources Kindling does not
# support are refused), unsupported_method (Firecracker and Kindling answer
# 400 with a fault_message, not 405).
#
#   KINDLING_API_MICROVM  the binary (default: the debug example)
#   SCHEMATHESIS          the schemathesis command (default: schemathesis)
#   KINDLING_API_EXAMPLES examples per operation (default 25)
set -euo pipefail
cd "$(dirname "$0")/../.."

microvm=$(realpath "${KINDLING_API_MICROVM:-target/x86_64-unknown-linux-gnu/debug/examples/microvm}")
st=${SCHEMATHESIS:-schemathesis}
examples=${KINDLING_API_EXAMPLES:-25}
spec=tests/api/firecracker-swagger.yaml

work=$(mktemp -d)
vmm_pid=
proxy_pid=
cleanup() {
    [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null || true
    [ -n "$vmm_pid" ] && kill "$vmm_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The VMM runs in an empty directory, so relative paths that the generated
# bodies name (kernels, drives, log files) do not exist.
mkdir "$work/cwd"
(cd "$work/cwd" && exec "$microvm" --api-sock "$work/api.sock" --serial off) \
    >"$work/vmm.out" 2>"$work/vmm.err" &
vmm_pid=$!
for _ in $(seq 1 500); do [ -S "$work/api.sock" ] && break; sleep 0.01; done
[ -S "$work/api.sock" ] || { echo "schemathesis: the API socket never appeared" >&2; cat "$work/vmm.err" >&2; exit 1; }
python3 tests/api/uds_proxy.py "$work/api.sock" "$work/port" &
proxy_pid=$!
for _ in $(seq 1 500); do [ -s "$work/port" ] && break; sleep 0.01; done
url="http://127.0.0.1:$(cat "$work/port")"

common=(--url "$url" --workers 1 --max-examples "$examples" --phases examples,coverage,fuzzing
        --request-timeout 20 --generation-database none --no-color --suppress-health-check all)

echo "schemathesis: pass 1, responses against the document"
timeout 300 "$st" run "$spec" "${common[@]}" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance

echo "schemathesis: pass 2, schema-invalid requests are refused"
timeout 300 "$st" run "$spec" "${common[@]}" --mode negative \
    --exclude-operation-id patchMachineConfiguration \
    --checks negative_data_rejection

# The VMM survived all of it and still answers.
kill -0 "$vmm_pid" || { echo "schemathesis: the VMM died" >&2; cat "$work/vmm.err" >&2; exit 1; }
python3 - "$work/api.sock" <<'PY'
import http.client, json, socket, sys
class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(sys.argv[1])
c = Conn("localhost")
c.request("GET", "/")
r = c.getresponse()
body = json.loads(r.read())
assert r.status == 200 and body["state"] == "Not started", (r.status, body)
print("schemathesis: the VMM still answers:", body)
PY
