#!/bin/sh
# Starts one node of the compose cluster. Every node gets the same config
# and cookie; a node given EJABBERD_JOIN (a node name) joins that node's
# cluster once it runs, unless list_cluster already names it (a restart).
set -eu

: "${XMPP_DOMAIN:?}" "${IOTGATE_DOMAIN:?}" "${IOTGATE_SECRET:?}" "${ERLANG_COOKIE:?}"
case "$IOTGATE_SECRET$XMPP_DOMAIN$IOTGATE_DOMAIN" in
*[!A-Za-z0-9.-]*) echo "domains and IOTGATE_SECRET: letters, digits, . and - only" >&2; exit 1 ;;
esac

sed -e "s/@XMPP_DOMAIN@/$XMPP_DOMAIN/g" -e "s/@IOTGATE_DOMAIN@/$IOTGATE_DOMAIN/g" \
	-e "s/@IOTGATE_SECRET@/$IOTGATE_SECRET/g" /etc/ejabberd/ejabberd.yml.in >/etc/ejabberd/ejabberd.yml
# The node name must stay the same across restarts (mnesia keys its data
# by it): compose gives each node a fixed hostname. ERL_DIST_PORT: every
# node listens for Erlang distribution on 5210 and finds the others there,
# no epmd.
cat >/etc/ejabberd/ejabberdctl.cfg <<CFG
ERLANG_NODE=ejabberd@$(hostname -s)
ERL_DIST_PORT=5210
CFG
home=/var/lib/ejabberd
printf '%s' "$ERLANG_COOKIE" >"$home/.erlang.cookie"
chown ejabberd:ejabberd "$home/.erlang.cookie" /etc/ejabberd/ejabberd.yml
chmod 400 "$home/.erlang.cookie"

ejabberdctl foreground &
pid=$!
trap 'ejabberdctl stop; wait $pid' TERM INT

if [ -n "${EJABBERD_JOIN:-}" ]; then
	until ejabberdctl started >/dev/null 2>&1; do sleep 1; done
	until ejabberdctl list_cluster | grep -qF "$EJABBERD_JOIN"; do
		ejabberdctl join_cluster "$EJABBERD_JOIN" || sleep 2
	done
fi
wait $pid
