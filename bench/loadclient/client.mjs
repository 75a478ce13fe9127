// bench/load.py's gRPC load client (--client node): the same calls as its Python client, at a
// fraction of the CPU per message, so that on a small machine shared with the server the load
// generator takes fewer of the cores being measured.
//
//   node client.mjs JOB.json OUT.json
//
// JOB.json (written by bench/load.py): address, key, frame_s, call_timeout_s, drain_deadline_s,
// variants {id: {messages: [base64 serialized VerifyRequest audio messages], marked: [chunk index]}},
// streams [{index, variant, start_offset_s, start: base64 serialized SessionStart request}].
// Messages go out as the bytes Python serialized and decisions come back as raw bytes (parsed by
// the parent), so this client knows nothing of the protocol buffers. Times are CLOCK_MONOTONIC
// seconds (process.hrtime), the clock of Python's time.monotonic(): the parent compares them.
//
// Protocol with the parent: prints "ready" once the channel is connected, reads t0 (a monotonic
// time in seconds) from stdin, runs every stream against absolute deadlines (chunk k of a stream
// is due start + frame_s * (k + 1), so lateness never accumulates), writes OUT.json and exits.

import { readFileSync, writeFileSync } from "node:fs";
import { createInterface } from "node:readline";
import grpc from "@grpc/grpc-js";

const METHOD = "/authsvc.v1.VerificationService/Verify";
const now = () => Number(process.hrtime.bigint()) / 1e9;
const identity = (b) => b;
const STATUS_NAME = Object.fromEntries(Object.entries(grpc.status).map(([k, v]) => [v, k]));

const [jobPath, outPath] = process.argv.slice(2);
const job = JSON.parse(readFileSync(jobPath, "utf8"));
const variants = {};
for (const [id, v] of Object.entries(job.variants)) {
  variants[id] = { messages: v.messages.map((m) => Buffer.from(m, "base64")), marked: new Set(v.marked) };
}

const client = new grpc.Client(job.address, grpc.credentials.createInsecure(), {
  // As the Python client: one channel, every stream multiplexed on it.
  "grpc.max_receive_message_length": 16 * 1024 * 1024,
});

function runStream(spec, t0, results) {
  const variant = variants[spec.variant];
  const res = {
    index: spec.index,
    variant: spec.variant,
    start_offset_s: spec.start_offset_s,
    started: false,
    completed: false,
    error: null,
    received: [], // [monotonic s, base64 Decision]
    sent: {}, // chunk index -> monotonic s its write began (marked chunks only)
    lateness: new Float32Array(variant.messages.length).fill(NaN),
  };
  results.push(res);
  const startAt = t0 + spec.start_offset_s;
  return new Promise((resolve) => {
    let call = null;
    let timer = null;
    let ended = false;
    const finish = (error) => {
      if (ended) return;
      ended = true;
      if (timer) clearTimeout(timer);
      if (error) res.error = error;
      else res.completed = true;
      resolve();
    };
    const open = () => {
      const metadata = new grpc.Metadata();
      metadata.set("authorization", `Bearer ${job.key}`);
      call = client.makeBidiStreamRequest(METHOD, identity, identity, metadata, {
        deadline: Date.now() + job.call_timeout_s * 1000,
      });
      res.started = true;
      res.cancel = () => {
        if (!ended) {
          call.cancel();
          finish("CUT_AT_DRAIN_DEADLINE");
        }
      };
      call.on("data", (buf) => res.received.push([now(), buf.toString("base64")]));
      call.on("error", (err) => finish(STATUS_NAME[err.code] ?? `CLIENT_${err.code}`));
      call.on("status", (st) => {
        if (st.code === grpc.status.OK) finish(null);
      });
      call.write(Buffer.from(spec.start, "base64"));
      send(0);
    };
    // Sends chunk k at its deadline (never before), then schedules k + 1.
    const send = (k) => {
      if (ended) return;
      const messages = variant.messages;
      while (k < messages.length) {
        const due = startAt + (k + 1) * job.frame_s;
        const t = now();
        if (t < due) {
          timer = setTimeout(() => send(k), Math.max(1, (due - t) * 1000));
          return;
        }
        res.lateness[k] = t - due;
        if (variant.marked.has(k)) res.sent[k] = t;
        call.write(messages[k]);
        k += 1;
      }
      call.end();
    };
    const delay = (startAt - now()) * 1000;
    if (delay > 0) setTimeout(open, delay);
    else open();
  });
}

// The loop's own lag: a 5 ms timer's lateness, sampled throughout (the Python client's probe).
function lagProbe(samples, stopped) {
  const tick = () => {
    if (stopped.value) return;
    const due = now() + 0.005;
    setTimeout(() => {
      samples.push(now() - due);
      tick();
    }, 5);
  };
  tick();
}

async function main() {
  await new Promise((resolve, reject) =>
    client.waitForReady(Date.now() + 30000, (err) => (err ? reject(err) : resolve())),
  );
  process.stdout.write("ready\n");
  const lines = createInterface({ input: process.stdin });
  const t0 = await new Promise((resolve) => lines.once("line", (l) => resolve(Number(l))));
  lines.close();
  const results = [];
  const lag = [];
  const stopped = { value: false };
  lagProbe(lag, stopped);
  const all = Promise.all(job.streams.map((s) => runStream(s, t0, results)));
  // At the drain deadline, unfinished streams are cut (their promises settle as they are).
  const drain = setTimeout(
    () => results.forEach((r) => r.cancel?.()),
    Math.max(0, (t0 + job.drain_deadline_s - now()) * 1000),
  );
  await all;
  clearTimeout(drain);
  stopped.value = true;
  const out = results.map(({ cancel, lateness, ...r }) => ({
    ...r,
    lateness: Buffer.from(lateness.buffer).toString("base64"),
  }));
  writeFileSync(
    outPath,
    JSON.stringify({ streams: out, loop_lag: Buffer.from(new Float32Array(lag).buffer).toString("base64") }),
  );
  client.close();
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`load client: ${err.stack ?? err}\n`);
  process.exit(1);
});
