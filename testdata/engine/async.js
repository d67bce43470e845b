// Async handlers: await, timers, and for-await / async generators, which
// esbuild lowers because goja has neither.
async function* numbers(n) {
  for (let i = 1; i <= n; i++) {
    await new Promise((r) => setTimeout(r, 1));
    yield i;
  }
}

export default {
  async outbound(request, env, ctx) {
    const started = Date.now();
    await new Promise((r) => setTimeout(r, 30));
    let sum = 0;
    for await (const x of numbers(4)) sum += x;
    const up = await fetch(new URL("/bytes", request.url).toString());
    let n = 0;
    for await (const chunk of up.body) n += chunk.length;
    return new Response(`waited=${Date.now() - started >= 30} sum=${sum} read=${n} id=${ctx.containerId}`);
  },
};
