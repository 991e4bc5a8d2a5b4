# Shared by the repository tests: repository keys, a published repository,
# nginx on 127.0.0.1 serving it, and devices that trust it. Source after
# libtest.sh and libresponse.sh.

command -v nginx >/dev/null || command -v /usr/sbin/nginx >/dev/null || skip_all "nginx is not installed (scripts/install-deps installs it)"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# nginx_start DOCROOT [EXTRA_LOCATION_CONFIG]: serves DOCROOT on $PORT; access log in $T/nginx/access.log.
nginx_start() {
	local docroot=$1 extra=${2:-}
	mkdir -p "$T/nginx/logs"
	PORT=$(free_port)
	cat >"$T/nginx/nginx.conf" <<CONF
user root;
worker_processes 1;
daemon on;
pid $T/nginx/nginx.pid;
error_log $T/nginx/logs/error.log warn;
events { worker_connections 64; }
http {
	log_format rsr '\$request_method \$uri \$status \$body_bytes_sent "\$http_range"';
	access_log $T/nginx/access.log rsr;
	client_body_temp_path $T/nginx/body;
	proxy_temp_path $T/nginx/proxy;
	fastcgi_temp_path $T/nginx/fastcgi;
	uwsgi_temp_path $T/nginx/uwsgi;
	scgi_temp_path $T/nginx/scgi;
	types { application/json json; }
	default_type application/octet-stream;
	server {
		listen 127.0.0.1:$PORT;
		root $docroot;
		location /metadata/ { add_header Cache-Control "no-cache"; }
		location /targets/ { add_header Cache-Control "public, max-age=31536000, immutable"; }
		$extra
	}
}
CONF
	"$NGINX" -p "$T/nginx" -c "$T/nginx/nginx.conf" -e "$T/nginx/logs/error.log"
	cleanup_hooks+=("nginx_stop")
	for _ in $(seq 50); do
		curl -s -o /dev/null "http://127.0.0.1:$PORT/metadata/1.root.json" && return 0
		sleep 0.1
	done
	fail "nginx did not start"
}
nginx_stop() {
	[ -f "$T/nginx/nginx.pid" ] && kill "$(cat "$T/nginx/nginx.pid")" 2>/dev/null
	for _ in $(seq 50); do [ -f "$T/nginx/nginx.pid" ] || return 0; sleep 0.1; done
}

# repo_setup: keys for each role and a repository $R with (a) and (b) published.
repo_setup() {
	R=$T/repo
	K=$T/rkeys
	mkdir -p "$K"
	for k in root root2 targets snapshot timestamp timestamp2 evil; do
		"$RSR" key generate -o "$K/$k" >/dev/null 2>&1
	done
	SIGN="--key $K/targets --key $K/snapshot --key $K/timestamp"
	"$RSR" -q repo init "$R" --root-key "$K/root" --targets-key "$K/targets" \
		--snapshot-key "$K/snapshot" --timestamp-key "$K/timestamp"
	"$RSR" -q repo add "$R" "$V/a" $SIGN
	"$RSR" -q repo add "$R" "$V/b" $SIGN
}

# repo_device DIR [POLICY LINES...]: a device on the base that trusts $R's first root and uses nginx.
repo_device() {
	local d=$1
	shift
	device_root "$d"
	cp "$R/metadata/1.root.json" "$d/etc/rsr/repository-root.json"
	{
		echo "# test policy"
		echo "mirror = http://127.0.0.1:$PORT"
		echo "timeout = 10"
		for l in "$@"; do echo "$l"; done
	} >"$d/etc/rsr/rsr.conf"
}

# device_unchanged DIR STATE: like device_is, and no download left behind but partial files.
json_get() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}))' "$@"; }

# nginx_start_https DOCROOT: the nginx configuration of docs/repository.md, as documented,
# on 127.0.0.1:$PORT with a self-signed certificate for 127.0.0.1 ($T/tls/ca.pem).
nginx_start_https() {
	local docroot=$1
	mkdir -p "$T/nginx/logs" "$T/tls"
	PORT=$(free_port)
	openssl req -x509 -newkey ed25519 -nodes -days 2 -subj "/CN=127.0.0.1" \
		-addext "subjectAltName=IP:127.0.0.1" -keyout "$T/tls/key.pem" -out "$T/tls/ca.pem" 2>/dev/null
	python3 - "$RSR_SRCDIR/docs/repository.md" "$T/nginx/server.conf" "$PORT" "$T/tls" "$docroot" <<'PY'
import re, sys
doc, out, port, tls, root = sys.argv[1:]
block = re.search(r"```nginx\n(.*?)```", open(doc).read(), re.S).group(1)
block = block.replace("listen 443 ssl http2;", "listen 127.0.0.1:%s ssl http2;" % port)
block = re.sub(r"\n\s*listen \[::\]:443[^\n]*", "", block)
block = re.sub(r"ssl_certificate\s+(\S+);", "ssl_certificate %s/ca.pem;" % tls, block)
block = re.sub(r"ssl_certificate_key\s+(\S+);", "ssl_certificate_key %s/key.pem;" % tls, block)
block = block.replace("root /srv/rsr;", "root %s;" % root)
block = block.replace("server_name updates.example.com;", "server_name 127.0.0.1;")
open(out, "w").write(block)
PY
	cat >"$T/nginx/nginx.conf" <<CONF
user root;
worker_processes 1;
daemon on;
pid $T/nginx/nginx.pid;
error_log $T/nginx/logs/error.log warn;
events { worker_connections 64; }
http {
	log_format rsr '\$request_method \$uri \$status \$body_bytes_sent "\$http_range"';
	access_log $T/nginx/access.log rsr;
	client_body_temp_path $T/nginx/body;
	proxy_temp_path $T/nginx/proxy;
	fastcgi_temp_path $T/nginx/fastcgi;
	uwsgi_temp_path $T/nginx/uwsgi;
	scgi_temp_path $T/nginx/scgi;
	include $T/nginx/server.conf;
}
CONF
	"$NGINX" -p "$T/nginx" -c "$T/nginx/nginx.conf" -e "$T/nginx/logs/error.log"
	cleanup_hooks+=("nginx_stop")
	for _ in $(seq 50); do
		curl -s -o /dev/null --cacert "$T/tls/ca.pem" "https://127.0.0.1:$PORT/metadata/1.root.json" && return 0
		sleep 0.1
	done
	cat "$T/nginx/logs/error.log" >&2
	fail "nginx (https) did not start"
}

# tuf_edit FILE KEY PYTHON: runs PYTHON on the envelope's "signed" object (as s) and signs it
# again with KEY (what the holder of that role's key can do): one signature, under KEY's id.
tuf_edit() {
	python3 - "$1" "$2" "$3" <<'PY'
import hashlib, json, subprocess, sys, tempfile
path, key, code = sys.argv[1:4]
env = json.load(open(path))
s = env["signed"]
exec(code)
msg = json.dumps(s, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
with tempfile.NamedTemporaryFile() as f:
    f.write(msg)
    f.flush()
    sig = subprocess.run(["openssl", "pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", f.name],
                         capture_output=True, check=True).stdout
env["signatures"] = [{"keyid": env["signatures"][0]["keyid"], "sig": sig.hex()}]
json.dump(env, open(path, "w"))
PY
}
