import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { describe, expect, it } from "vitest";
import { canBind, freePort } from "../../app/infra/free-port.js";

describe("freePort", () => {
  it("hands out bindable ports below the kernel's ephemeral range (never a client socket's)", async () => {
    const low = Number(
      readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0],
    );
    for (let i = 0; i < 20; i++) {
      const port = await freePort();
      expect(port).toBeGreaterThanOrEqual(20_000);
      if (low > 20_000) expect(port).toBeLessThan(low);
      expect(await canBind("127.0.0.1", port)).toBe(true);
    }
  });

  it("tells a port in use from a free one", async () => {
    const srv = createServer();
    const port = await freePort();
    await new Promise<void>((r) => srv.listen(port, "127.0.0.1", r));
    try {
      expect(await canBind("127.0.0.1", port)).toBe(false);
    } finally {
      await new Promise<void>((r) => srv.close(() => r()));
    }
    expect(await canBind("127.0.0.1", port)).toBe(true);
  });
});
