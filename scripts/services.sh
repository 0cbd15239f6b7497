#!/usr/bin/env bash
# Start PostgreSQL, MariaDB, Redis and RabbitMQ on this machine if any is down, and wait for
# them. Exits non-zero if one cannot be reached (CI must not silently skip their tests).
set -uo pipefail
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() {  # name port seconds
  for _ in $(seq 1 "$3"); do up "$2" && { echo "$1 up on :$2"; return 0; }; sleep 1; done
  echo "$1 is not reachable on :$2" >&2; return 1
}
up 5432 || pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
up 6379 || redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
  --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
up 5672 || rabbitmq-server -detached
up 3306 || start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
status=0
wait_for postgresql 5432 60 || status=1
wait_for redis 6379 30 || status=1
wait_for mariadb 3306 60 || status=1
wait_for rabbitmq 5672 120 || status=1
exit $status
