// The blocked hook as a property of the default export, beside the lists
// it answers for; `this` is the exported object.
export default {
  enableInternet: false,
  allowedHosts: ["allowed.test"],
  deniedHosts: ["evil.test"],
  blocked(request, env, ctx) {
    return Response.json({ hook: "default", reason: ctx.reason, internet: this.enableInternet }, { status: 403 });
  },
};
