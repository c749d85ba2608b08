#!/usr/bin/env python3
"""Issue 18 figures: runs `storebox serve` (the binary given as the only argument) on loopback with
a temporary data dir and tries the floods of the hostile-input review, printing the RSS after each:
20,000 subscription filters, 50,000 QoS 2 publishes without PUBREL, 200 parallel wrong passwords,
300 idle HTTP connections, 2,000 invented HTTP methods. Usage: scripts/hostile-figures.py BINARY"""
import json, os, socket, struct, subprocess, sys, tempfile, time, threading, http.client

BIN = sys.argv[1]
tmp = tempfile.mkdtemp()
env = dict(os.environ, STOREBOX_STORAGE__DATA_DIR=tmp, STOREBOX_HTTP__LISTEN="127.0.0.1:0",
           STOREBOX_MQTT__LISTEN="127.0.0.1:0", STOREBOX_LOG__LEVEL="warn")

def cli(*args, stdin=None):
    return subprocess.run([BIN, *args], env=env, input=stdin, capture_output=True, text=True)

out = cli("device", "add", "fridge-1", "--kind", "fridge").stdout
pw = [l.split(":", 1)[1].strip() for l in out.splitlines() if l.strip().startswith("password:")][0]
cli("user", "add", "maria", "--role", "manager", "--password-stdin", stdin="right-password-123\n")
p = subprocess.Popen([BIN, "serve"], env=env, stdout=subprocess.PIPE, stderr=open(tmp + "/err.log", "w"), text=True)
line = p.stdout.readline()
http_addr = line.split("http=http://")[1].split()[0]
mport = int(line.split("mqtt=mqtt://")[1].split(":")[-1])
hhost, hport = http_addr.rsplit(":", 1)

def rss():
    s = open(f"/proc/{p.pid}/status").read()
    g = lambda k: int([l for l in s.splitlines() if l.startswith(k)][0].split()[1]) // 1024
    return g("VmRSS:"), g("VmHWM:")

def s_(x):
    b = x.encode(); return struct.pack(">H", len(b)) + b

def pkt(first, body):
    n = len(body); v = b""
    while True:
        d = n % 128; n //= 128
        v += bytes([d | (0x80 if n else 0)])
        if not n: break
    return bytes([first]) + v + body

def connect():
    c = socket.create_connection(("127.0.0.1", mport))
    c.sendall(pkt(0x10, s_("MQTT") + bytes([4, 0xC2]) + struct.pack(">H", 30) + s_("fridge-1") + s_("fridge-1") + s_(pw)))
    assert c.recv(4) == b"\x20\x02\x00\x00"
    return c

def alive(c, wait=0.5):
    c.settimeout(wait)
    try:
        d = c.recv(65536)
        return d != b""
    except socket.timeout:
        return True
    except OSError:
        return False

print("binary", BIN)
print("start: rss MiB", rss())

# 1. subscription flood: 20,000 distinct store/yN filters, 100 per SUBSCRIBE, on reconnecting connections
N = 20000; closed = 0; c = connect(); pk = 1
for i in range(0, N, 100):
    body = struct.pack(">H", pk) + b"".join(s_(f"store/y{j}") + b"\x00" for j in range(i, i + 100)); pk = pk % 65535 + 1
    try:
        c.sendall(pkt(0x82, body))
    except OSError:
        closed += 1; c = connect(); c.sendall(pkt(0x82, body))
    if not alive(c, 0.01):
        closed += 1; c = connect()
time.sleep(2)
print(f"1. after {N} store/yN filters (connection closed {closed} times): rss MiB", rss())
c.close()

# 2. QoS 2 flood: 50,000 QoS 2 publishes without PUBREL
c = connect(); sent = 0; closed_at = None
topic = s_("devices/fridge-1/telemetry"); payload = b'{"metrics":{"t":1}}'
for i in range(50000):
    try:
        c.sendall(pkt(0x34, topic + struct.pack(">H", i % 65535 + 1) + payload)); sent += 1
    except OSError:
        closed_at = i; break
time.sleep(2)
print(f"2. QoS 2 without PUBREL: sent {sent}, closed at {closed_at if closed_at is not None else ('yes' if not alive(c) else 'never')}: rss MiB", rss())
c.close()

# 3. 200 parallel wrong passwords from one address
codes = []
def login(i):
    h = http.client.HTTPConnection(hhost, int(hport), timeout=60)
    h.request("POST", "/api/v1/session", json.dumps({"username": "maria", "password": f"wrong-{i}-xxxxxxx"}), {"Content-Type": "application/json"})
    codes.append(h.getresponse().status)
t0 = time.time()
ts = [threading.Thread(target=login, args=(i,)) for i in range(200)]
[t.start() for t in ts]; [t.join() for t in ts]
print(f"3. 200 parallel wrong passwords: {codes.count(401)} x 401, {codes.count(429)} x 429 in {time.time()-t0:.2f} s: rss/peak MiB", rss())

# 4. 300 idle HTTP connections (nothing sent), open after 15 s
socks = [socket.create_connection((hhost, int(hport))) for _ in range(300)]
time.sleep(15)
open_ = sum(1 for s in socks if alive(s, 0.01))
print(f"4. 300 idle HTTP connections: {open_} still open after 15 s")
[s.close() for s in socks]

# 5. invented methods
for i in range(2000):
    h = socket.create_connection((hhost, int(hport)))
    h.sendall(f"INV{i} /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    while h.recv(4096): pass
    h.close()
m = http.client.HTTPConnection(hhost, int(hport)); m.request("GET", "/metrics"); body = m.getresponse().read()
print(f"5. /metrics after 2000 invented methods: {len(body)} bytes")
p.terminate(); p.wait()
