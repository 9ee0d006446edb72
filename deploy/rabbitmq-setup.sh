#!/bin/sh
# One-shot: the dead-letter exchange and queue Orion's queues expect, and the
# policy that routes to them, through RabbitMQ's management API (the server's
# user and vhost come from its RABBITMQ_DEFAULT_* settings). Idempotent (PUTs).
set -eu
api="http://rabbitmq:15672/api"
auth="$RABBITMQ_USER:$RABBITMQ_PASSWORD"
vhost="$RABBITMQ_VHOST"
call() { curl -fsS -u "$auth" -H 'content-type: application/json' -X "$1" "$api/$2" -d "$3"; }
call PUT "exchanges/$vhost/orion.dead_letter" '{"type":"fanout","durable":true}'
call PUT "queues/$vhost/orion.dead_letter" '{"durable":true}'
call POST "bindings/$vhost/e/orion.dead_letter/q/orion.dead_letter" '{}'  # the same binding again is a no-op
call PUT "policies/$vhost/orion-dead-letter" \
  '{"pattern":"^orion\\.(saga|fulfilment|notify)$","apply-to":"queues","definition":{"dead-letter-exchange":"orion.dead_letter"}}'
echo "rabbitmq: dead-letter exchange, queue and policy in place"
