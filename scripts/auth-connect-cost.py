"""Cost of authentication per new CQL connection: times N fresh
connections (TCP connect, STARTUP, and with a user AUTH_RESPONSE with a
SASL PLAIN token) until READY / AUTH_SUCCESS, with the raw v4 protocol
(no driver overhead).

    auth-connect-cost.py HOST [USER PASSWORD] [N]
"""
import socket
import statistics
import struct
import sys
import time


def frame(opcode, body, stream=0):
    return struct.pack(">BBhBi", 4, 0, stream, opcode, len(body)) + body


def read_frame(s):
    head = b""
    while len(head) < 9:
        chunk = s.recv(9 - len(head))
        if not chunk:
            raise SystemExit("connection closed")
        head += chunk
    _, _, _, opcode, length = struct.unpack(">BBhBi", head)
    body = b""
    while len(body) < length:
        body += s.recv(length - len(body))
    return opcode, body


def string(v):
    b = v.encode()
    return struct.pack(">H", len(b)) + b


def one(host, user, password):
    t0 = time.perf_counter()
    s = socket.create_connection((host, 9042))
    s.sendall(frame(0x01, struct.pack(">H", 1) + string("CQL_VERSION") + string("3.0.0")))
    op, body = read_frame(s)
    if op == 0x03:
        token = b"\0" + user.encode() + b"\0" + password.encode()
        s.sendall(frame(0x0F, struct.pack(">i", len(token)) + token))
        op, body = read_frame(s)
        if op != 0x10:
            raise SystemExit(f"auth failed: opcode {op:#x} {body!r}")
    elif op != 0x02:
        raise SystemExit(f"unexpected opcode {op:#x} {body!r}")
    took = time.perf_counter() - t0
    s.close()
    return took


def main():
    host = sys.argv[1]
    user, password = (sys.argv[2], sys.argv[3]) if len(sys.argv) > 3 else ("", "")
    n = int(sys.argv[4]) if len(sys.argv) > 4 else (int(sys.argv[2]) if len(sys.argv) == 3 else 50)
    one(host, user, password)  # warm the role cache
    times = [one(host, user, password) for _ in range(n)]
    ms = sorted(t * 1000 for t in times)
    print(
        f"{host} {'user ' + user if user else 'no auth'}: {n} connections, "
        f"median {statistics.median(ms):.2f} ms, mean {statistics.mean(ms):.2f} ms, "
        f"p90 {ms[int(n * 0.9) - 1]:.2f} ms, min {ms[0]:.2f} ms"
    )


if __name__ == "__main__":
    main()
