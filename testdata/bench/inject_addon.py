# mitmdump addon equivalent to testdata/bench/inject.js: set one credential
# header on every request, plain HTTP and intercepted HTTPS alike. The token
# comes from the environment, as env.BENCH_TOKEN does for the JS script.
import os

TOKEN = os.environ["BENCH_TOKEN"]


class Inject:
    def request(self, flow):
        flow.request.headers["authorization"] = "Bearer " + TOKEN


addons = [Inject()]
