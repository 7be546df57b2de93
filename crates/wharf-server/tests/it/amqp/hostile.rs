//! Hostile input on the AMQP port: a wrong protocol header, a frame larger than frame_max,
//! a frame for a channel that was never opened, and garbage each close only their own
//! connection; a pika client connected before them still works after.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic, channel, connection, AMQPClass};

use super::pika;
use crate::start_broker;

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Everything the server sends until it closes the socket.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    s.read_to_end(&mut all)
        .expect("the server closes the connection (no read timeout)");
    all
}

fn send(s: &mut TcpStream, frame: &AMQPFrame) {
    let bytes = gen_frame(frame)(WriteContext::from(Vec::new()))
        .unwrap()
        .write;
    s.write_all(&bytes).unwrap();
}

/// Reads one frame (test helper: frames are small here).
fn recv(s: &mut TcpStream) -> AMQPFrame {
    let mut head = [0u8; 7];
    s.read_exact(&mut head).unwrap();
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    let mut frame = head.to_vec();
    frame.resize(7 + size + 1, 0);
    s.read_exact(&mut frame[7..]).unwrap();
    parse_frame(frame.as_slice()).unwrap().1
}

/// Header, start-ok (PLAIN guest), tune-ok, open: a connection ready for channels.
fn handshake(s: &mut TcpStream) {
    login(s, "\0guest\0guest", "/", 0, 0);
    assert!(matches!(
        recv(s),
        AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)))
    ));
}

/// Sends header, start-ok with a PLAIN `response`, tune-ok (`channel_max`, frame_max 8192,
/// `heartbeat`; 0 keeps the server's channel_max) and open of `vhost`, stopping early if the
/// server closes; the answer to open (or to the refused login) is left to read.
fn login(s: &mut TcpStream, response: &str, vhost: &str, channel_max: u16, heartbeat: u16) {
    login_with(s, "PLAIN", response, vhost, channel_max, heartbeat);
}

/// [`login`] with another SASL `mechanism`.
fn login_with(
    s: &mut TcpStream,
    mechanism: &str,
    response: &str,
    vhost: &str,
    channel_max: u16,
    heartbeat: u16,
) {
    s.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
    assert!(matches!(
        recv(s),
        AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(_)))
    ));
    send(
        s,
        &AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: amq_protocol::types::FieldTable::default(),
                mechanism: mechanism.into(),
                response: response.into(),
                locale: "en_US".into(),
            })),
        ),
    );
    let AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(tune))) = recv(s)
    else {
        return;
    };
    send(
        s,
        &AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: if channel_max == 0 {
                    tune.channel_max
                } else {
                    channel_max
                },
                frame_max: 8192,
                heartbeat,
            })),
        ),
    );
    send(
        s,
        &AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: vhost.into(),
            })),
        ),
    );
}

#[test]
fn refusals_carry_the_spec_reply_codes_and_heartbeats_are_kept() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.amqp_addr().unwrap();

    // A wrong password: 403 ACCESS_REFUSED.
    let mut s = connect(&addr);
    s.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
    let _start = recv(&mut s);
    send(
        &mut s,
        &AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: amq_protocol::types::FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: "\0guest\0wrong".into(),
                locale: "en_US".into(),
            })),
        ),
    );
    assert_eq!(close_code(&read_to_close(&mut s)), Some(403));

    // A vhost other than "/": 530 NOT_ALLOWED.
    let mut s = connect(&addr);
    login(&mut s, "\0guest\0guest", "/elsewhere", 0, 0);
    assert_eq!(close_code(&read_to_close(&mut s)), Some(530));

    // A channel above the negotiated channel_max: 504 CHANNEL_ERROR.
    let mut s = connect(&addr);
    login(&mut s, "\0guest\0guest", "/", 10, 0);
    let _open_ok = recv(&mut s);
    send(
        &mut s,
        &AMQPFrame::Method(
            11,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ),
    );
    assert_eq!(close_code(&read_to_close(&mut s)), Some(504));

    // heartbeat=1: the server sends heartbeats, and closes a client that sends none (320).
    let mut s = connect(&addr);
    login(&mut s, "\0guest\0guest", "/", 0, 1);
    let _open_ok = recv(&mut s);
    let rest = read_to_close(&mut s);
    let mut frames = Vec::new();
    let mut at: &[u8] = &rest;
    while let Ok((next, frame)) = parse_frame(at) {
        frames.push(frame);
        at = next;
    }
    assert!(
        frames.iter().any(|f| matches!(f, AMQPFrame::Heartbeat)),
        "the server sent heartbeats: {frames:?}"
    );
    assert_eq!(close_code(&rest), Some(320), "{frames:?}");
}

/// The reply code of the connection.close the server sent before closing.
fn close_code(bytes: &[u8]) -> Option<u16> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let (next, frame) = parse_frame(rest).ok()?;
        if let AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c))) = frame
        {
            return Some(c.reply_code);
        }
        rest = next;
    }
    None
}

const SURVIVOR: &str = r#"

conn = connect()
ch = conn.channel()
ch.queue_declare("survivor")
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
ch.confirm_delivery()
ch.basic_publish("", "survivor", "still-here")
m, p, b = ch.basic_get("survivor", auto_ack=True)
conn.close()
print(json.dumps({"body": b.decode()}))
"#;

#[test]
fn hostile_frames_close_only_their_connection() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.amqp_addr().unwrap();

    // A client that is connected through it all.
    let mut survivor = std::process::Command::new(super::python())
        .arg("-c")
        .arg(format!("{}\n{SURVIVOR}", super::PRELUDE))
        .arg(addr.rsplit_once(':').unwrap().1)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = [0u8; 6];
    survivor
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    assert_eq!(&line, b"ready\n");

    // A wrong protocol header: the server answers with the one it speaks and closes.
    let mut s = connect(&addr);
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_to_close(&mut s), b"AMQP\x00\x00\x09\x01");

    // A frame larger than frame_max (8192 after tune): 501 FRAME_ERROR, closed.
    let mut s = connect(&addr);
    handshake(&mut s);
    let mut huge = vec![1u8, 0, 0];
    huge.extend_from_slice(&(10_000_000u32).to_be_bytes());
    s.write_all(&huge).unwrap();
    assert_eq!(close_code(&read_to_close(&mut s)), Some(501));

    // A method on a channel that was never opened: 504 CHANNEL_ERROR, closed.
    let mut s = connect(&addr);
    handshake(&mut s);
    send(
        &mut s,
        &AMQPFrame::Method(
            7,
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: 1,
                global: false,
            })),
        ),
    );
    assert_eq!(close_code(&read_to_close(&mut s)), Some(504));

    // Garbage after the handshake: a frame error, closed.
    let mut s = connect(&addr);
    handshake(&mut s);
    send(
        &mut s,
        &AMQPFrame::Method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ),
    );
    s.write_all(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 4, 1, 2, 3, 4, 5])
        .unwrap();
    let code = close_code(&read_to_close(&mut s));
    assert!(
        matches!(code, Some(501 | 505)),
        "garbage closes with a frame error, got {code:?}"
    );

    // Garbage before any header: closed.
    let mut s = connect(&addr);
    s.write_all(&[0xff; 64]).unwrap();
    assert_eq!(read_to_close(&mut s), b"AMQP\x00\x00\x09\x01");

    survivor.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let out = survivor.wait_with_output().unwrap();
    assert!(out.status.success(), "the survivor failed: {out:?}");
    let value: serde_json::Value = serde_json::from_slice(&out.stdout[..]).unwrap();
    assert_eq!(value["body"], "still-here");
    // And a new client is served too.
    let fresh = pika(
        &addr,
        "conn = connect(); ch = conn.channel(); ch.queue_declare('x'); conn.close(); print(json.dumps({'ok': True}))",
        &[],
    );
    assert_eq!(fresh["ok"], true);
}

/// An AMQPLAIN response: a field table without its length prefix, LOGIN and PASSWORD as
/// long strings.
fn amqplain(user: &str, password: &str) -> String {
    let mut out = String::new();
    for (name, value) in [("LOGIN", user), ("PASSWORD", password)] {
        out.push(char::from(u8::try_from(name.len()).unwrap()));
        out.push_str(name);
        out.push('S');
        for b in u32::try_from(value.len()).unwrap().to_be_bytes() {
            out.push(char::from(b));
        }
        out.push_str(value);
    }
    out
}

#[test]
fn amqplain_logs_in_and_refuses_a_wrong_password() {
    let (_dir, broker) = start_broker(&[]);
    let addr = broker.amqp_addr().unwrap();
    let mut s = connect(&addr);
    login_with(&mut s, "AMQPLAIN", &amqplain("guest", "guest"), "/", 0, 0);
    let answer = recv(&mut s);
    assert!(
        matches!(
            answer,
            AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)))
        ),
        "{answer:?}"
    );
    let mut s = connect(&addr);
    s.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
    let _start = recv(&mut s);
    send(
        &mut s,
        &AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: amq_protocol::types::FieldTable::default(),
                mechanism: "AMQPLAIN".into(),
                response: amqplain("guest", "wrong").as_str().into(),
                locale: "en_US".into(),
            })),
        ),
    );
    assert_eq!(
        close_code(&read_to_close(&mut s)),
        Some(403),
        "a wrong AMQPLAIN password is ACCESS_REFUSED"
    );
}
