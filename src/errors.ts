/**
 * Errors carry a stable `code`; callers match on `code` or `instanceof`, never on message
 * text. `cause` is passed through so the original failure is never hidden.
 */
export type AdclickErrorCode =
  | "CONFIG_INVALID"
  | "INFRA_NOT_PROVISIONED"
  | "INFRA_START_FAILED"
  | "NATS_SERVER_TOO_OLD"
  | "LAYOUT_CONFLICT"
  | "BAD_REQUEST"
  | "NOT_FOUND"
  | "INTERNAL";

export class AdclickError extends Error {
  readonly code: AdclickErrorCode;
  constructor(code: AdclickErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AdclickError";
    this.code = code;
  }
}

/** A configuration setting is missing or invalid; the message names the setting and why. */
export class ConfigError extends AdclickError {
  readonly setting: string;
  constructor(setting: string, message: string) {
    super("CONFIG_INVALID", `${setting}: ${message}`);
    this.name = "ConfigError";
    this.setting = setting;
  }
}

/** A server we manage could not be found, started or reached in time. */
export class InfraError extends AdclickError {
  constructor(
    code: "INFRA_NOT_PROVISIONED" | "INFRA_START_FAILED" | "NATS_SERVER_TOO_OLD",
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
    this.name = "InfraError";
  }
}
