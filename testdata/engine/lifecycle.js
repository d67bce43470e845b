// Per-invocation lifecycle: stray timers die with their invocation, and a
// timer that blows the stack retires its runtime.
let ticks = 0;
function recurse() { return recurse() + 1; }

export default {
  outboundHandlers: {
    leaveInterval() {
      setInterval(() => ticks++, 1);
      return new Response("left");
    },
    count: async () => {
      const before = ticks;
      await new Promise((r) => setTimeout(r, 30));
      return new Response(String(ticks - before));
    },
    overflowLater() {
      setTimeout(() => recurse(), 0);
      return new Response("scheduled");
    },
    log(request, env, ctx) {
      console.log("from", ctx.containerId);
      return new Response("logged");
    },
    slowFetch: async (request) => fetch(request),
  },
};
