# keyeforge: Spark's environment script, installed by `make setup` into the venv's Spark
# (site-packages/pyspark/conf/spark-env.sh), so that a plain `spark-submit jobs/...` gets it.
#
# A local master (no --master, or local[...]) runs the driver and the executors in one JVM, whose
# heap Spark sets to 1 GiB unless told otherwise. This gives it a quarter of the machine's memory
# (or of the cgroup's limit), between 1 GiB and 16 GiB: the same rule as curation/spark.py applies
# to a plain `python jobs/...` run. The jobs' memory is bounded by bytes either way (they pass with
# 512 MiB); the heap only buys fewer spills and larger broadcast joins. An explicit
# --driver-memory, spark.driver.memory or SPARK_DRIVER_MEMORY always wins; other masters (YARN,
# Kubernetes, standalone) are left alone: size drivers and executors there as usual.
#
# Spark sources this file with spark-class's arguments in "$@" (SparkSubmit and the command line).

if [ -z "${SPARK_DRIVER_MEMORY:-}" ]; then
  _kf_master=""
  _kf_given=""
  _kf_previous=""
  for _kf_arg in "$@"; do
    case "$_kf_previous" in
      --master) _kf_master="$_kf_arg" ;;
      --driver-memory) _kf_given=1 ;;
      --conf|-c)
        case "$_kf_arg" in
          spark.master=*) _kf_master="${_kf_arg#spark.master=}" ;;
          spark.driver.memory=*) _kf_given=1 ;;
        esac ;;
    esac
    case "$_kf_arg" in
      --master=*) _kf_master="${_kf_arg#--master=}" ;;
      --driver-memory=*) _kf_given=1 ;;
      --conf=spark.master=*) _kf_master="${_kf_arg#--conf=spark.master=}" ;;
      --conf=spark.driver.memory=*) _kf_given=1 ;;
    esac
    _kf_previous="$_kf_arg"
  done
  _kf_defaults="${SPARK_CONF_DIR:-}/spark-defaults.conf"
  if [ -f "$_kf_defaults" ]; then
    grep -Eq '^[[:space:]]*spark\.driver\.memory[[:space:]=]' "$_kf_defaults" && _kf_given=1
    [ -z "$_kf_master" ] && _kf_master="$(sed -nE 's/^[[:space:]]*spark\.master[[:space:]=]+//p' "$_kf_defaults" | tail -1)"
  fi
  [ -z "$_kf_master" ] && _kf_master="${MASTER:-}"
  case "$_kf_master" in
    ""|local|local\[*)
      if [ -z "$_kf_given" ] && [ -r /proc/meminfo ]; then
        _kf_mib=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
        if [ -r /sys/fs/cgroup/memory.max ]; then
          _kf_limit=$(cat /sys/fs/cgroup/memory.max)
          case "$_kf_limit" in
            ''|*[!0-9]*) ;;
            *) [ $(( _kf_limit / 1048576 )) -lt "$_kf_mib" ] && _kf_mib=$(( _kf_limit / 1048576 )) ;;
          esac
        fi
        _kf_mib=$(( _kf_mib / 4 ))
        [ "$_kf_mib" -lt 1024 ] && _kf_mib=1024
        [ "$_kf_mib" -gt 16384 ] && _kf_mib=16384
        SPARK_DRIVER_MEMORY="${_kf_mib}m"
        export SPARK_DRIVER_MEMORY
      fi ;;
  esac
  unset _kf_master _kf_given _kf_previous _kf_arg _kf_defaults _kf_mib _kf_limit
fi

# Java's class-data sharing (make's `.spark-cds` archive) refuses a classpath holding a non-empty
# directory, and Spark's launcher puts SPARK_CONF_DIR on the classpath: with this file in it, the
# archive could be neither recorded nor used. When the conf folder is the venv's own and holds
# nothing but this script (what set-up leaves: pyspark ships no conf), point Spark at its empty
# `classpath/` subfolder instead: Spark finds no spark-defaults.conf or log4j2.properties either way,
# so nothing changes but the classpath. A folder holding a user's files, or a SPARK_CONF_DIR the user
# set, is used as it is.
if [ -n "${SPARK_HOME:-}" ] && [ "${SPARK_CONF_DIR:-}" = "${SPARK_HOME}/conf" ] && [ -d "${SPARK_HOME}/conf/classpath" ]; then
  _kf_entries="$(cd "${SPARK_HOME}/conf" && ls -A | tr '\n' ' ')"
  _kf_inside="$(ls -A "${SPARK_HOME}/conf/classpath")"
  if [ "$_kf_entries" = "classpath spark-env.sh " ] && [ -z "$_kf_inside" ]; then
    SPARK_CONF_DIR="${SPARK_HOME}/conf/classpath"
    export SPARK_CONF_DIR
  fi
  unset _kf_entries _kf_inside
fi
