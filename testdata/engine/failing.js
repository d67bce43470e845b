function recurse(n) { return recurse(n + 1) + 1; }

export default {
  outboundHandlers: {
    throws(request, env) {
      throw new Error("leaked " + env.SECRET);
    },
    nonResponse() {
      return { status: 200 };
    },
    nothing() {},
    loop() {
      for (;;) {}
    },
    asyncLoop: async () => {
      await new Promise((r) => setTimeout(r, 1));
      for (;;) {}
    },
    regex() {
      // Backreferences force goja onto regexp2, which backtracks.
      const ok = /^(a+)+\1b$/.test("a".repeat(40) + "c");
      return new Response(String(ok));
    },
    recursion() {
      return new Response(String(recurse(0)));
    },
    reject: async () => {
      throw new TypeError("async nope");
    },
    sleepy: async () => {
      await new Promise((r) => setTimeout(r, 20));
      return new Response("slept");
    },
    stuck: () => new Promise(() => {}),
    bigBody: async (request) => new Response(String((await request.text()).length)),
  },
};
