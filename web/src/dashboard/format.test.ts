import { describe, expect, it } from "vitest";
import { formatFields, formatValue, MAX_FIELDS_CHARS, shorten, timeLabels, valueAxisSize, valueLabels } from "./format";

describe("formatValue", () => {
  it("writes structured values as compact JSON, never [object Object]", () => {
    expect(formatValue({ index: 100001, state: "RUNNING" })).toBe('{"index":100001,"state":"RUNNING"}');
    expect(formatValue([{ a: 1 }, { b: [2, 3] }])).toBe('[{"a":1},{"b":[2,3]}]');
    expect(formatValue(new Float32Array([1.5, 2]))).toBe("[1.5,2]");
    expect(formatValue({ big: 12345678901234n })).toBe('{"big":12345678901234}');
  });
  it("writes scalars as they are, strings quoted", () => {
    expect(formatValue(1.25)).toBe("1.25");
    expect(formatValue(true)).toBe("true");
    expect(formatValue("a b")).toBe('"a b"');
    expect(formatValue(null)).toBe("null");
  });
});

describe("formatFields", () => {
  it("keeps every value whole in full and shortens long ones in short", () => {
    const scripts = Array.from({ length: 20 }, (_, i) => ({ index: 100000 + i, path: `maintel/track_target_${i}.py` }));
    const { short, full } = formatFields({ enabled: true, current_scripts: scripts });
    expect(full).toBe(`enabled=true current_scripts=${JSON.stringify(scripts)}`);
    expect(short.startsWith('enabled=true current_scripts=[{"index":100000,')).toBe(true);
    expect(short.length).toBeLessThanOrEqual(MAX_FIELDS_CHARS);
    expect(short).toContain("…");
    expect(short + full).not.toContain("[object");
  });
  it("leaves short lines alone", () => {
    expect(formatFields({ a: 1, s: "x" })).toEqual({ short: 'a=1 s="x"', full: 'a=1 s="x"' });
  });
  it("shortens to the limit with an ellipsis", () => {
    expect(shorten("abcdef", 4)).toBe("abc…");
    expect(shorten("abc", 4)).toBe("abc");
  });
});

describe("valueLabels", () => {
  it("has enough digits for the spacing of the ticks", () => {
    expect(valueLabels([80.0001, 80.0002, 80.0003], 0.0001)).toEqual(["80.0001", "80.0002", "80.0003"]);
    expect(valueLabels([-0.0002, 0, 0.0002], 0.0002)).toEqual(["-0.0002", "0.0000", "0.0002"]);
    expect(valueLabels([0, 0.25, 0.5], 0.25)).toEqual(["0.00", "0.25", "0.50"]);
    expect(valueLabels([0, 20, 40], 20)).toEqual(["0", "20", "40"]);
    expect(valueLabels([0.1 + 0.2, 0.4], 0.1)).toEqual(["0.3", "0.4"]);
  });
  it("never writes -0", () => {
    expect(valueLabels([-1e-17, 0.5], 0.5)).toEqual(["0.0", "0.5"]);
    expect(valueLabels([-0, 1], 1)).toEqual(["0", "1"]);
  });
  it("adds digits until neighbours differ", () => {
    const labels = valueLabels([1.00001, 1.00002], 0.1);
    expect(new Set(labels).size).toBe(2);
  });
  it("sizes the axis to its longest label", () => {
    expect(valueAxisSize(["-12345.0001", "1"])).toBeGreaterThan(valueAxisSize(["0", "1"]));
    expect(valueAxisSize(null)).toBeGreaterThan(0);
  });
});

describe("timeLabels", () => {
  // 2026-12-07 22:12:00 UTC
  const t0 = Date.UTC(2026, 11, 7, 22, 12, 0) / 1000;
  it("writes minutes, the date only under the first tick and a new day", () => {
    expect(timeLabels([t0, t0 + 60, t0 + 120], 60)).toEqual(["22:12\n2026-12-07", "22:13", "22:14"]);
    const midnight = Date.UTC(2026, 11, 8) / 1000;
    expect(timeLabels([midnight - 3600, midnight, midnight + 3600], 3600)).toEqual([
      "23:00\n2026-12-07",
      "00:00\n2026-12-08",
      "01:00",
    ]);
  });
  it("adds seconds and fractions as the ticks get closer", () => {
    expect(timeLabels([t0 + 5, t0 + 10], 5)).toEqual(["22:12:05\n2026-12-07", "22:12:10"]);
    expect(timeLabels([t0 + 0.25, t0 + 0.5], 0.25)).toEqual(["22:12:00.25\n2026-12-07", "22:12:00.50"]);
  });
  it("writes dates alone a day or more apart", () => {
    expect(timeLabels([t0, t0 + 86_400], 86_400)).toEqual(["2026-12-07", "2026-12-08"]);
  });
  it("never writes two lines on one line (the overlap of 12/7/26 10:12pm10:13pm)", () => {
    for (const label of timeLabels([t0, t0 + 60], 60)) {
      for (const line of label.split("\n")) expect(line.length).toBeLessThanOrEqual(11);
    }
  });
});
