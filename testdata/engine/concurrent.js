// Many invocations sharing few runtimes: waiting on timers and I/O, CPU
// hogs, crashes. ctx.params.ms sets the durations.
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Settled by fireSignal: a wait that involves no I/O and no timer. One per
// ctx.params.ms, so that a test can use a fresh one.
const signals = {};
function signal(key) {
  if (!signals[key]) {
    let fire;
    signals[key] = new Promise((r) => (fire = r));
    signals[key].fire = fire;
  }
  return signals[key];
}
function recurse(n) {
  return recurse(n + 1) + 1;
}
function spin(ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {}
}

export default {
  outboundHandlers: {
    fast: () => new Response("fast"),
    async fastLater() {
      await sleep(1);
      return new Response("fast");
    },
    async sleep(request, env, ctx) {
      await sleep(ctx.params.ms);
      return new Response("slept");
    },
    // Waits for the test's upstream, which answers when the test says so.
    async gate(request) {
      const up = await fetch(request);
      return new Response("gate " + (await up.text()));
    },
    async readBody(request) {
      return new Response(String((await request.text()).length));
    },
    hog(request, env, ctx) {
      spin(ctx.params.ms);
      return new Response("hog");
    },
    async hogLater(request, env, ctx) {
      await sleep(1);
      spin(ctx.params.ms);
      return new Response("hog");
    },
    // Who am I after an await: the request, ctx and console stay the
    // invocation's own while others run in between.
    async whoami(request, env, ctx) {
      const url = request.url;
      await sleep(ctx.params.ms);
      console.log("after the wait", ctx.containerId);
      const up = await fetch(request);
      return new Response(`${ctx.containerId} ${url} ${await up.text()}`);
    },
    async waitSignal(request, env, ctx) {
      await signal(ctx.params.ms);
      return new Response("signalled");
    },
    fireSignal(request, env, ctx) {
      signal(ctx.params.ms).fire();
      return new Response("fired");
    },
    overflow() {
      return new Response(String(recurse(0)));
    },
    boom() {
      __testPanic("on purpose");
      return new Response("unreachable");
    },
    async boomLater() {
      await sleep(1);
      __testPanic("on purpose, in a timer's job");
      return new Response("unreachable");
    },
    forever() {
      for (;;) {}
    },
    // Holds its runtime, as a runaway does, until the test lets go.
    hold() {
      __testHold();
      return new Response("held");
    },
  },
};
