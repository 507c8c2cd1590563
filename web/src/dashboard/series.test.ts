import { describe, expect, it } from "vitest";
import { fieldValue, mergeBuckets } from "./series";

describe("fieldValue", () => {
  it("reads scalars, array elements and booleans", () => {
    const f = { a: 1.5, arr: [10, 20, 30], b: true, s: "x" };
    expect(fieldValue(f, "a")).toBe(1.5);
    expect(fieldValue(f, "arr[2]")).toBe(30);
    expect(fieldValue(f, "arr[9]")).toBeNull();
    expect(fieldValue(f, "b")).toBe(1);
    expect(fieldValue(f, "s")).toBeNull();
    expect(fieldValue(f, "missing")).toBeNull();
  });
});

describe("mergeBuckets", () => {
  it("appends history to an empty plot, min then max per bucket", () => {
    const xs: number[] = [];
    const ys: (number | null)[][] = [[]];
    mergeBuckets(xs, ys, [100, 102], [[1], [3]], [[2], [9]], 2);
    expect(xs).toEqual([100, 101, 102, 103]);
    expect(ys[0]).toEqual([1, 2, 3, 9]);
  });

  it("replaces the sparse points of an outage and keeps those around it", () => {
    const xs = [90, 95, 104, 106, 120];
    const ys: (number | null)[][] = [[0, 1, 44, 45, 7], [5, 5, 5, 5, 5]];
    mergeBuckets(xs, ys, [100, 104], [[2, 8], [3, 8]], [[4, 8], [6, 8]], 2);
    // Buckets of 2 s at 100 and 104 (102 was empty): 104 and 106 lie inside
    // [100, 106) or at its end and are replaced up to 106; 95 and 120 stay.
    expect(xs).toEqual([90, 95, 100, 101, 104, 105, 106, 120]);
    expect(ys[0]).toEqual([0, 1, 2, 4, 3, 6, 45, 7]);
    expect(ys[1]).toEqual([5, 5, 8, 8, 8, 8, 5, 5]);
  });

  it("sizes buckets from the request, not from the distance between non-empty ones", () => {
    // Data only at 0 s and from 30 s on: the newest point must stay near 31.5,
    // or live samples of the next half minute would be refused as out of order.
    const xs: number[] = [];
    const ys: (number | null)[][] = [[]];
    mergeBuckets(xs, ys, [0, 30, 31], [[1], [2], [3]], [[1], [2], [3]], 1);
    expect(xs).toEqual([0, 0.5, 30, 30.5, 31, 31.5]);
  });

  it("keeps a bucket's missing field as a gap", () => {
    const xs: number[] = [];
    const ys: (number | null)[][] = [[], []];
    mergeBuckets(xs, ys, [0, 1], [[1, null], [2, 3]], [[1, null], [2, 3]], 1);
    expect(ys[1]).toEqual([null, null, 3, 3]);
  });
});
