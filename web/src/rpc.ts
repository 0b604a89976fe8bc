// JSON-RPC 2.0 over the `control` data channel (docs/protocol.md#the-control-data-channel).

export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> };

export class Rpc {
  private nextId = 1;
  private pending = new Map<number, Pending>();

  constructor(
    private readonly channel: RTCDataChannel,
    private readonly onNotification: (method: string, params: unknown) => void,
    private readonly timeoutMs = 5000,
  ) {
    channel.addEventListener("message", (ev) => this.onMessage(ev.data));
    channel.addEventListener("close", () => this.failAll(new Error("data channel closed")));
  }

  call<T = unknown>(method: string, params?: unknown): Promise<T> {
    if (this.channel.readyState !== "open") return Promise.reject(new Error("data channel not open"));
    const id = this.nextId++;
    const req: Record<string, unknown> = { jsonrpc: "2.0", id, method };
    if (params !== undefined) req.params = params;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method}: no answer in ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      try {
        this.channel.send(JSON.stringify(req));
      } catch (e) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
  }

  private onMessage(data: unknown): void {
    if (typeof data !== "string") return;
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(data);
    } catch {
      return;
    }
    if (typeof m !== "object" || m === null) return;
    if (typeof m.id === "number" && this.pending.has(m.id)) {
      const p = this.pending.get(m.id)!;
      this.pending.delete(m.id);
      clearTimeout(p.timer);
      const err = m.error as { code?: number; message?: string } | undefined;
      if (err && typeof err === "object") p.reject(new RpcError(err.code ?? 0, err.message ?? "error"));
      else p.resolve(m.result);
    } else if (m.id === undefined && typeof m.method === "string") {
      this.onNotification(m.method, m.params);
    }
  }

  private failAll(e: Error): void {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(e);
    }
    this.pending.clear();
  }
}
