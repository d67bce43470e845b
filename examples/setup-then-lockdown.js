// Open a few hosts while a sandbox installs its dependencies, then shut all
// HTTP off, without restarting anything:
//
//   outbound ctl setOutboundHandler sbx-1 allowHosts '{"allowedHostnames":["registry.npmjs.org"]}'
//   ... npm install ...
//   outbound ctl setOutboundHandler sbx-1 noHttp
export default {
  enableInternet: false, // before any handler is picked, nothing leaves
  interceptHttps: true,
  outboundHandlers: {
    allowHosts(request, env, ctx) {
      const host = new URL(request.url).hostname;
      const allowed = ctx.params?.allowedHostnames ?? [];
      if (allowed.includes(host)) {
        return fetch(request);
      }
      return new Response(`outbound: ${host} is not allowed during setup\n`, { status: 403 });
    },
    noHttp() {
      return new Response(null, { status: 403 });
    },
  },
};
