// Binary frames: the client asks for MessagePack with `format: "msgpack"`
// and handles them as it handles JSON ones. The frame in testdata/ was
// written by the Rust encoder (proto/src/msgpack.rs checks it is current),
// so decoding it here with a standard MessagePack library and finding the
// JSON encoder's frame shows the two encodings carry the same message.

import { decode } from "@msgpack/msgpack";
import { describe, expect, it } from "vitest";
import { MeridianClient, type Sample, type SocketLike } from "./client";
import batchJson from "./testdata/batch.json?raw";
import batchHex from "./testdata/batch.msgpack.hex?raw";

/** The frame the Rust encoder wrote (as hex text, see proto/src/msgpack.rs). */
const binaryFrame = (): Uint8Array => {
  const hex = batchHex.trim();
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
};

/** Numbers compared as numbers: MessagePack has integers beyond 2^53 that JSON.parse rounds. */
function normalise(v: unknown): unknown {
  if (typeof v === "bigint") return Number(v);
  if (Array.isArray(v)) return v.map(normalise);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalise(x)]));
  return v;
}

describe("MessagePack frames", () => {
  it("decode to the same message as the JSON frame of the same samples", () => {
    const binary = binaryFrame();
    const json = JSON.parse(batchJson);
    const decoded = decode(binary, { useBigInt64: true });
    expect(normalise(decoded)).toEqual(json);
    // Floats the CSC sent as 32-bit values keep every digit JSON printed.
    const forces = (decoded as { samples: { fields: { xForce: number[] } }[] }).samples[0].fields.xForce;
    expect(forces[3]).toBe(12.345678329467773);
    expect(binary.length).toBeLessThan(batchJson.trim().length);
  });

  it("are asked for in the URL and delivered like JSON ones", () => {
    class BinarySocket implements SocketLike {
      readyState = 0;
      binaryType = "blob";
      onopen: ((ev: unknown) => void) | null = null;
      onmessage: ((ev: { data: unknown }) => void) | null = null;
      onclose: ((ev: { code: number; reason: string }) => void) | null = null;
      onerror: ((ev: unknown) => void) | null = null;
      sent: Record<string, unknown>[] = [];
      constructor(readonly url: string) {}
      send(data: string) {
        this.sent.push(JSON.parse(data));
      }
      close() {}
    }
    let socket: BinarySocket | null = null;
    const client = new MeridianClient({
      url: "ws://fake/ws?x=1",
      token: "t",
      format: "msgpack",
      socket: (url) => (socket = new BinarySocket(url)),
    });
    const got: Sample[] = [];
    client.on("sample", (s) => got.push(s));
    const s = socket!;
    expect(s.url).toBe("ws://fake/ws?x=1&format=msgpack");
    expect(s.binaryType).toBe("arraybuffer");
    s.readyState = 1;
    s.onopen?.({});
    s.onmessage?.({ data: JSON.stringify({ type: "welcome", scope: "read", tick_ms: 20, server: "f", format: "msgpack" }) });
    client.subscribe({ csc: "MTM1M3", salindex: 1, category: "telemetry", topic: "forceActuatorData" });
    s.onmessage?.({
      data: JSON.stringify({
        type: "subscribed",
        topics: [{ csc: "MTM1M3", salindex: 1, category: "telemetry", topic: "forceActuatorData" }],
        waiting: false,
      }),
    });
    s.onmessage?.({ data: binaryFrame().buffer });
    expect(got.map((x) => x.id)).toContain("1764638000123-0");
    const force = got.find((x) => x.topic === "forceActuatorData")!;
    expect(force.fields.xForce).toEqual([1.25, -3.5, 0.1, 12.345678329467773]);
    expect(force.lag.total).toBeGreaterThan(0);
    // A binary frame that is not MessagePack is reported, not thrown.
    const errors: string[] = [];
    client.on("error", (m) => errors.push(String(m)));
    s.onmessage?.({ data: new Uint8Array([0xc1]).buffer });
    expect(errors.join()).toContain("MessagePack");
    client.close();
  });
});
