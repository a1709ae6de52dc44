# The Rucio 41 server with juno-dci's policy package: Rucio's official image plus the wheel this
# repository builds. Build from the repository root (the images cannot be built on the development
# machines, which reach no image registry; tests check what they install and copy):
#
#   .venv/bin/python -m pip wheel --no-deps -w dist .
#   docker build -f deploy/production/images/rucio-server.Dockerfile -t registry.example.org/juno/rucio-server-juno:41.5.1-juno .
#
# The server imports `rucio_policy` ([policy] package, deploy/rucio-config.yaml) and reads the replication
# policy from /opt/juno-dci/etc (mount the coordinators' current policy there in production).
FROM rucio/rucio-server:release-41.5.1

COPY dist/ /tmp/juno-dci-dist/
# The policy package needs Rucio's own dependencies (in the image) and PyYAML; --no-deps keeps the tools'
# dependencies (Kafka, HTCondor) out of the image. tests/test_deploy_production.py imports the policy package
# with nothing but Rucio's dependency closure and the requirements named on the next line.
RUN python3 -m pip install --no-cache-dir "PyYAML>=6" \
 && python3 -m pip install --no-cache-dir --no-deps /tmp/juno-dci-dist/juno_dci-*.whl \
 && rm -rf /tmp/juno-dci-dist \
 && python3 -c "import rucio_policy.permission, rucio_policy.schema, rucio_policy.lfn2pfn"
COPY etc/replication.yaml etc/sites.yaml /opt/juno-dci/etc/
