// A policy whose handler fetches what it is given and whose class forwards
// everything else (step 8): in a test neither may reach the network.
export default {
  enableInternet: true,
  outboundByHost: {
    "fetcher.test": (request) => fetch(new URL(request.url).searchParams.get("target")),
  },
};
