// Answers with the named env var, or "<unset>".
export default {
  outbound(request, env, ctx) {
    const name = new URL(request.url).pathname.slice(1);
    return new Response(name in env ? String(env[name]) : "<unset>");
  },
};
