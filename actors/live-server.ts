import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import { type EventObject, fromCallback } from "xstate";
import { type LiveRequest, liveSubject } from "../src/query/live.js";
import type { ChildSpec } from "../supervisor/supervisor.js";
import type { LiveAnswer } from "./aggregator.js";
import { serviceLogic } from "./service.js";

/**
 * The live server: answers adclick.live.<p> for the partitions this worker offers by sending
 * each request to the partition's aggregator actor (LIVE_QUERY, with itself as the reply
 * address) and passing its LIVE_ANSWER on. No queue group: every worker offering a partition
 * hears the request, and only the one whose aggregator runs it (the lease holder) answers;
 * standbys and aggregators that do not answer in time stay silent.
 */
export function liveServerChild(
  nc: NatsConnection,
  o: { id: string; partitions: number[]; shutdownMs: number; answerWithinMs?: number },
): ChildSpec {
  const answerWithinMs = o.answerWithinMs ?? 2000;
  const serve = fromCallback<EventObject, { id: string }>(({ system, self, receive, sendBack }) => {
    const pending = new Map<string, { msg: Msg; timer: ReturnType<typeof setTimeout> }>();
    let next = 0;
    receive((e) => {
      if (e.type !== "LIVE_ANSWER") return;
      const a = e as LiveAnswer;
      const p = pending.get(a.requestId);
      if (!p) return;
      pending.delete(a.requestId);
      clearTimeout(p.timer);
      if (a.reply) p.msg.respond(JSON.stringify(a.reply));
    });
    const subs: Subscription[] = o.partitions.map((p) =>
      nc.subscribe(liveSubject(p), {
        callback: (err, msg) => {
          if (err) return;
          let request: LiveRequest;
          try {
            request = msg.json<LiveRequest>();
          } catch (e) {
            msg.respond(
              JSON.stringify({ partition: p, throughSeq: 0, minutes: [], error: String(e) }),
            );
            return;
          }
          const aggregator = system.get(`aggregator-${p}`);
          if (!aggregator) return; // not running here
          const requestId = String(++next);
          const timer = setTimeout(() => pending.delete(requestId), answerWithinMs);
          pending.set(requestId, { msg, timer });
          aggregator.send({ type: "LIVE_QUERY", request, replyTo: self, requestId });
        },
      }),
    );
    sendBack({ type: "SERVICE_READY" });
    return () => {
      for (const s of subs) s.unsubscribe();
      for (const p of pending.values()) clearTimeout(p.timer);
    };
  });
  return {
    id: o.id,
    kind: "live-server",
    restart: "permanent",
    shutdownMs: o.shutdownMs,
    logic: serviceLogic(serve),
    input: { id: o.id },
  };
}
