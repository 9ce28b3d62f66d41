/**
 * The click event as the whole pipeline sees it, after parsing and validation.
 * Field names are camelCase here; the wire/JSON names of the SPEC (ad_id, user_id, ...)
 * appear only at the edges (log lines, query API).
 */
export interface ClickEvent {
  /** Advertisement id, e.g. "ad001". */
  adId: string;
  /** Event time (the click), epoch milliseconds UTC. */
  timestampMs: number;
  userId: string;
  /** Normalised textual IP (v4 dotted quad or v6 compressed lower-case form). */
  ip: string;
  /** Upper-case country code or name as given (validated charset), e.g. "USA". */
  country: string;
  /**
   * Event identity for exactly-once: the click_id when the producer gave one, else an id
   * derived deterministically from (source, file, byte offset) of the log line.
   */
  eventId: string;
}

/** The attribute dimensions of the star schema that counts can be broken down by. */
export type Dimension = "country" | "ip" | "userId";

export const ONE_MINUTE_MS = 60_000;
