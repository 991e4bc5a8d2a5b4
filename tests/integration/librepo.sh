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
