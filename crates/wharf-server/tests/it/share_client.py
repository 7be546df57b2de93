# The share-group tests' client: confluent-kafka's ShareConsumer (librdkafka's share
# consumer) plus its admin client and producer. One command per run; the Rust tests read the
# printed lines.
#
#   setup ADDR TOPIC PARTITIONS GROUP [KEY=VALUE...]   topic + share-group configs
#   produce ADDR TOPIC N                                 keys k<i>, values v<i>, header h=x<i>
#   produce-one ADDR TOPIC KEY VALUE
#   produce-txn ADDR TOPIC                               keys a0..a4 aborted, c0..c4 committed
#   consume ADDR GROUP TOPIC POLICY IDLE_S MAX_S [ARG]   a share consumer, explicit acks
#   read ADDR TOPIC N [MAX_S]                            a classic consumer reads N records
#
# consume prints "polling" once it has polled twice, "got OFFSET DELIVERY_COUNT KEY MONOTONIC_MS" for each record and
# "acked OFFSET TYPE" once its acknowledgement is committed. It stops after IDLE_S seconds
# without a record (once it has had one) or after MAX_S seconds. Policies:
#   accept           accept every record (ARG: ms to sleep per record)
#   release-once     release a record on its first delivery, accept it afterwards
#   by-key           keys starting "reject" are rejected, "release" released, others accepted
#   die-holding      take one poll's records, print "holding", then SIGKILL itself
#   accept-then-hold accept ARG records, then hold the next poll's records: print "holding"
#                    and wait to be killed
import os
import signal
import sys
import time

from confluent_kafka import AcknowledgeType, Consumer, Producer, ShareConsumer
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic, ResourceType)


def out(*parts):
    print(*parts, flush=True)


def now_ms():
    return int(time.monotonic() * 1000)


def setup(addr, topic, partitions, group, *configs):
    admin = AdminClient({'bootstrap.servers': addr})
    for f in admin.create_topics([NewTopic(topic, int(partitions))]).values():
        f.result()
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
               for k, v in (c.split('=', 1) for c in configs)]
    if entries:
        resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)
        for f in admin.incremental_alter_configs([resource]).values():
            f.result()
    out('ready')


def produce(addr, topic, n):
    p = Producer({'bootstrap.servers': addr, 'acks': 'all', 'linger.ms': 5})
    for i in range(int(n)):
        p.produce(topic, key=f'k{i}'.encode(), value=f'v{i}'.encode(), headers=[('h', f'x{i}'.encode())])
    p.flush(30)
    out('produced')


def produce_one(addr, topic, key, value):
    p = Producer({'bootstrap.servers': addr, 'acks': 'all'})
    p.produce(topic, key=key.encode(), value=value.encode(), headers=[('h', b'orig')])
    p.flush(30)
    out('produced')


def produce_txn(addr, topic):
    # Keys a0..a4 in an aborted transaction, then c0..c4 in a committed one.
    p = Producer({'bootstrap.servers': addr, 'transactional.id': 'share-txn'})
    p.init_transactions(30)
    for prefix, commit in (('a', False), ('c', True)):
        p.begin_transaction()
        for i in range(5):
            p.produce(topic, key=f'{prefix}{i}'.encode(), value=b'v')
        p.flush(30)
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
    out('produced')


def consume(addr, group, topic, policy, idle_s, max_s, arg='0'):
    config = {'bootstrap.servers': addr, 'group.id': group,
              'share.acknowledgement.mode': 'explicit'}
    if os.environ.get('SHARE_CLIENT_DEBUG'):
        config['debug'] = os.environ['SHARE_CLIENT_DEBUG']
    c = ShareConsumer(config)
    c.subscribe([topic])
    start = time.monotonic()
    last = None
    accepted = 0
    polls = 0
    while time.monotonic() - start < float(max_s):
        polls += 1
        if polls == 3:
            # Two polls in: the member has joined and fetches (tests wait for this line).
            out('polling')
        if last is not None and time.monotonic() - last > float(idle_s):
            break
        msgs = c.poll(0.5)
        acks = []
        for m in msgs:
            if m.error():
                out('error', m.error())
                continue
            last = time.monotonic()
            key = (m.key() or b'').decode()
            out('got', m.offset(), m.delivery_count(), key, now_ms())
            if policy == 'accept':
                kind = AcknowledgeType.ACCEPT
                time.sleep(int(arg) / 1000)
            elif policy == 'release-once':
                kind = AcknowledgeType.RELEASE if m.delivery_count() == 1 else AcknowledgeType.ACCEPT
            elif policy == 'by-key':
                kind = (AcknowledgeType.REJECT if key.startswith('reject') else
                        AcknowledgeType.RELEASE if key.startswith('release') else AcknowledgeType.ACCEPT)
            elif policy == 'accept-then-hold' and accepted >= int(arg):
                kind = None
            elif policy in ('accept-then-hold',):
                kind = AcknowledgeType.ACCEPT
                accepted += 1
            elif policy == 'die-holding':
                kind = None
            else:
                raise SystemExit(f'unknown policy {policy}')
            if kind is not None:
                c.acknowledge(m, kind)
                acks.append((m.offset(), int(kind)))
        if msgs and policy == 'die-holding':
            out('holding')
            os.kill(os.getpid(), signal.SIGKILL)
        if acks:
            out('committing', now_ms())
            for tp, err in c.commit_sync(30).items():
                if err is not None:
                    out('commit-error', tp.partition, err)
            for offset, kind in acks:
                out('acked', offset, kind)
        if msgs and policy == 'accept-then-hold' and accepted >= int(arg) and len(acks) < len(msgs):
            out('holding')
            time.sleep(3600)
    c.close()
    out('closed')


def read(addr, topic, n, max_s='30'):
    c = Consumer({'bootstrap.servers': addr, 'group.id': f'reader-{os.getpid()}',
                  'auto.offset.reset': 'earliest', 'enable.auto.commit': False})
    c.subscribe([topic])
    got = 0
    deadline = time.monotonic() + float(max_s)
    while got < int(n) and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        got += 1
        headers = ';'.join(f'{k}={(v or b"").decode()}' for k, v in (m.headers() or []))
        out('record', (m.key() or b'').decode(), (m.value() or b'').decode(), headers)
    c.close()


COMMANDS = {'setup': setup, 'produce': produce, 'produce-one': produce_one, 'consume': consume,
            'read': read, 'produce-txn': produce_txn}
COMMANDS[sys.argv[1]](*sys.argv[2:])
