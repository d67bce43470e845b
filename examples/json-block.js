// Blocked requests answered as JSON, for clients that call .json() on every
// response. ctx.reason is "denied", "not_allowed" or "default_deny".
export default {
  enableInternet: false,
  allowedHosts: ["api.example.com", "*.example.org"],
  deniedHosts: ["private.example.org"],
};

export function blocked(request, env, ctx) {
  return Response.json(
    { error: "egress_blocked", reason: ctx.reason, host: new URL(request.url).hostname },
    { status: 403 },
  );
}
