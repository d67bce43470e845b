// A different API key for every sandbox: the key lives in a KV namespace
// under the instance id, so one sandbox can never use another's key.
//
//   outbound serve --script examples/per-instance-keys.js --kv KEYS
//   outbound ctl kv put KEYS sbx-1 sk-one
//   outbound ctl kv put KEYS sbx-2 sk-two
export default {
  interceptHttps: true,
  outboundByHost: {
    "api.openai.com": withInstanceKey,
    "api.anthropic.com": withInstanceKey,
  },
};

async function withInstanceKey(request, env, ctx) {
  const key = await env.KEYS.get(ctx.containerId);
  if (key === null) {
    return new Response(`outbound: no key stored for ${ctx.containerId}\n`, { status: 403 });
  }
  const r = new Request(request);
  r.headers.set("Authorization", `Bearer ${key}`);
  return fetch(r);
}
