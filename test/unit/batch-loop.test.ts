import type { JsMsg } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { batchLoop } from "../../src/nats/durable-consumer.js";

/**
 * A stand-in for the client's ConsumerMessages: messages pushed into a queue, read by one
 * async iterator. Like the real one, getPending() can stay above 0 with nothing buffered
 * (the client counts its queued pull-request callbacks there).
 */
function fakeMessages() {
  const queue: JsMsg[] = [];
  let wake: (() => void) | undefined;
  let stopped = false;
  const msg = (seq: number) => ({ seq }) as unknown as JsMsg;
  return {
    push(...seqs: number[]) {
      for (const s of seqs) queue.push(msg(s));
      wake?.();
    },
    getPending: () => queue.length + 1,
    stop() {
      stopped = true;
      wake?.();
    },
    async *[Symbol.asyncIterator](): AsyncGenerator<JsMsg> {
      for (;;) {
        while (queue.length > 0) yield queue.shift() as JsMsg;
        if (stopped) return;
        await new Promise<void>((r) => {
          wake = r;
        });
      }
    },
  };
}

describe("batchLoop", () => {
  it("hands over what is buffered without waiting for more messages", async () => {
    const m = fakeMessages();
    const ac = new AbortController();
    const batches: number[][] = [];
    let handled: () => void = () => {};
    const first = new Promise<void>((r) => {
      handled = r;
    });
    m.push(1, 2, 3);
    const loop = batchLoop(m, {
      maxBatch: 64,
      signal: ac.signal,
      onBatch: async (msgs) => {
        batches.push(msgs.map((x) => x.seq));
        handled();
      },
    });
    // No fourth message ever comes: the batch must not wait for one.
    await first;
    expect(batches).toEqual([[1, 2, 3]]);
    ac.abort();
    await loop;
  });

  it("splits at maxBatch, keeps order, and takes later messages as they come", async () => {
    const m = fakeMessages();
    const ac = new AbortController();
    const seen: number[][] = [];
    let done: () => void = () => {};
    const all = new Promise<void>((r) => {
      done = r;
    });
    m.push(1, 2, 3, 4, 5);
    const loop = batchLoop(m, {
      maxBatch: 2,
      signal: ac.signal,
      onBatch: async (msgs) => {
        seen.push(msgs.map((x) => x.seq));
        if (msgs.some((x) => x.seq === 7)) done();
      },
    });
    setTimeout(() => m.push(6, 7), 20);
    await all;
    expect(seen.flat()).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(seen.every((b) => b.length >= 1 && b.length <= 2)).toBe(true);
    ac.abort();
    await loop;
  });

  it("returns when the messages end", async () => {
    const m = fakeMessages();
    const got: number[] = [];
    m.push(1, 2);
    const loop = batchLoop(m, {
      maxBatch: 10,
      signal: new AbortController().signal,
      onBatch: async (msgs) => {
        for (const x of msgs) got.push(x.seq);
        m.stop();
      },
    });
    await loop;
    expect(got).toEqual([1, 2]);
  });
});
