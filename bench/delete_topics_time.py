#!/usr/bin/env python3
# Time to delete TOPICS topics of PARTITIONS partitions each, through confluent-kafka's
# AdminClient (the test venv has it: target/wharf-venv/bin/python). Start a broker first:
#   wharf serve --listen 127.0.0.1:19094 --data-dir DIR --set amqp_listen=off &
#   python bench/delete_topics_time.py 127.0.0.1:19094 100 100
import sys, time
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, topics, partitions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
admin = AdminClient({'bootstrap.servers': bootstrap})
names = [f"del-{i}" for i in range(topics)]
for f in admin.create_topics([NewTopic(n, partitions, 1) for n in names], operation_timeout=120).values():
    f.result()
time.sleep(1)
start = time.time()
for f in admin.delete_topics(names, operation_timeout=600, request_timeout=600).values():
    f.result()
print(f"deleted {topics} topics x {partitions} partitions in {time.time() - start:.2f} s")
