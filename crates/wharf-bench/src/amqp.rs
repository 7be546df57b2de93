//! A minimal blocking AMQP 0-9-1 client for the AMQP scenarios: frames through the
//! `amq-protocol` codec, one connection with one channel (1), PLAIN guest/guest.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use amq_protocol::frame::{gen_frame, parse_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::{basic, channel, confirm, connection, queue, AMQPClass};
use amq_protocol::types::FieldTable;
use anyhow::{bail, Context as _};

const FRAME_MAX: u32 = 131_072;

pub struct AmqpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    out: Vec<u8>,
}

fn encode(frame: &AMQPFrame, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let buffer = std::mem::take(out);
    *out = gen_frame(frame)(WriteContext::from(buffer))
        .map_err(|e| anyhow::anyhow!("encoding a frame: {e}"))?
        .write;
    Ok(())
}

impl AmqpClient {
    /// Connects, logs in and opens channel 1.
    pub fn connect(addr: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut client = Self {
            reader: BufReader::with_capacity(1 << 20, stream.try_clone()?),
            writer: stream,
            out: Vec::new(),
        };
        client.writer.write_all(b"AMQP\x00\x00\x09\x01")?;
        client.expect_method()?;
        client.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: "\0guest\0guest".into(),
                locale: "en_US".into(),
            })),
        )?;
        client.flush()?;
        let AMQPClass::Connection(connection::AMQPMethod::Tune(tune)) = client.expect_method()?
        else {
            bail!("expected connection.tune");
        };
        client.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: FRAME_MAX.min(tune.frame_max),
                heartbeat: 0,
            })),
        )?;
        client.call(AMQPClass::Connection(connection::AMQPMethod::Open(
            connection::Open {
                virtual_host: "/".into(),
            },
        )))?;
        client.call(AMQPClass::Channel(channel::AMQPMethod::Open(
            channel::Open {},
        )))?;
        Ok(client)
    }

    fn method(&mut self, channel: u16, class: AMQPClass) -> anyhow::Result<()> {
        encode(&AMQPFrame::Method(channel, class), &mut self.out)
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.writer.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// The next frame (heartbeats skipped).
    pub fn recv(&mut self) -> anyhow::Result<AMQPFrame> {
        loop {
            let mut head = [0u8; 7];
            self.reader.read_exact(&mut head)?;
            let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
            let mut frame = head.to_vec();
            frame.resize(7 + size + 1, 0);
            self.reader.read_exact(&mut frame[7..])?;
            let (_, parsed) =
                parse_frame(frame.as_slice()).map_err(|e| anyhow::anyhow!("bad frame: {e}"))?;
            if !matches!(parsed, AMQPFrame::Heartbeat) {
                return Ok(parsed);
            }
        }
    }

    /// The next method that is not a delivery (deliveries still in flight are skipped).
    fn expect_method(&mut self) -> anyhow::Result<AMQPClass> {
        let frame = loop {
            match self.recv()? {
                AMQPFrame::Header(..)
                | AMQPFrame::Body(..)
                | AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Deliver(_))) => {}
                frame => break frame,
            }
        };
        match frame {
            AMQPFrame::Method(_, AMQPClass::Connection(connection::AMQPMethod::Close(c))) => {
                bail!(
                    "connection closed: {} {}",
                    c.reply_code,
                    c.reply_text.as_str()
                )
            }
            AMQPFrame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Close(c))) => {
                bail!("channel closed: {} {}", c.reply_code, c.reply_text.as_str())
            }
            AMQPFrame::Method(_, class) => Ok(class),
            other => bail!("expected a method, got {other:?}"),
        }
    }

    /// Sends a method on channel 1 (0 for connection methods) and waits for its answer.
    pub fn call(&mut self, class: AMQPClass) -> anyhow::Result<AMQPClass> {
        let channel = u16::from(!matches!(class, AMQPClass::Connection(_)));
        self.method(channel, class)?;
        self.flush()?;
        self.expect_method()
    }

    pub fn confirm_select(&mut self) -> anyhow::Result<()> {
        self.call(AMQPClass::Confirm(confirm::AMQPMethod::Select(
            confirm::Select { nowait: false },
        )))
        .map(|_| ())
    }

    pub fn declare_queue(&mut self, name: &str, durable: bool) -> anyhow::Result<u32> {
        match self.call(AMQPClass::Queue(queue::AMQPMethod::Declare(
            queue::Declare {
                queue: name.into(),
                passive: false,
                durable,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            },
        )))? {
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) => Ok(ok.message_count),
            other => bail!("expected queue.declare-ok, got {other:?}"),
        }
    }

    pub fn delete_queue(&mut self, name: &str) -> anyhow::Result<()> {
        self.call(AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: name.into(),
            if_unused: false,
            if_empty: false,
            nowait: false,
        })))
        .map(|_| ())
    }

    /// Queues a persistent publish to `queue` through the default exchange (sent on flush).
    pub fn publish(&mut self, queue: &str, body: &[u8]) -> anyhow::Result<()> {
        self.method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: queue.into(),
                mandatory: false,
                immediate: false,
            })),
        )?;
        encode(
            &AMQPFrame::Header(
                1,
                AMQPContentHeader {
                    class_id: 60,
                    body_size: body.len() as u64,
                    properties: AMQPProperties::default().with_delivery_mode(2),
                },
            ),
            &mut self.out,
        )?;
        encode(&AMQPFrame::Body(1, body.to_vec()), &mut self.out)
    }

    pub fn qos_consume(&mut self, queue: &str, prefetch: u16) -> anyhow::Result<()> {
        self.call(AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: prefetch,
            global: false,
        })))?;
        self.call(AMQPClass::Basic(basic::AMQPMethod::Consume(
            basic::Consume {
                queue: queue.into(),
                consumer_tag: "bench".into(),
                no_local: false,
                no_ack: false,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            },
        )))
        .map(|_| ())
    }

    /// Queues an ack (sent on flush).
    pub fn ack(&mut self, delivery_tag: u64, multiple: bool) -> anyhow::Result<()> {
        self.method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag,
                multiple,
            })),
        )
    }
}
