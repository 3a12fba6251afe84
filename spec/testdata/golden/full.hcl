# Every field vzd knows, with a short note on each.
container "db01" {
  uuid        = "6f1c1e52-7a43-4d7e-9b6c-0c5a2f3e8d11"
  name        = "database"                 # alias; defaults to the block label
  description = "PostgreSQL primary"
  state       = "running"                  # running | stopped | destroyed
  onboot      = true
  hostname    = "db01.example.com"
  privileged  = false                      # true: no user namespace
  restart_to_apply = false                 # may vzd restart it to apply changes?

  ostemplate = "debian-12-x86_64"
  templates  = ["postgresql"]

  cpu {
    count = 2
    limit = "150%"                         # of one CPU
    units = 1000                           # relative weight
    mask  = "0-1"
  }
  memory {
    ram  = "2G"
    swap = "512M"
  }
  processes = 4096
  disk {
    size       = "20G"
    inodes     = 1310720
    iops_limit = 1000
    io_limit   = "50M"                     # bytes per second
  }
  network {
    nameservers    = ["192.0.2.53", "2001:db8::53"]
    search_domains = ["example.com"]
    interface "eth0" {                     # routed: no bridge
      ip       = ["198.51.100.20/32", "2001:db8:0:1::20/128"]
      gateway  = "198.51.100.1"
      gateway6 = "2001:db8:0:1::1"
      mtu      = 1500
    }
    interface "eth1" {                     # bridged
      bridge    = "br0"
      ip        = ["10.77.0.20/24"]
      mac       = "02:00:0a:4d:00:14"
      host_name = "veth-db01.1"
    }
  }
  sysctl = {
    "net.ipv4.ip_forward"   = "0"
    "kernel.shmmax"         = "4294967296"
    "net.core.somaxconn"    = 1024
  }
  device {
    path   = "/dev/fuse"
    access = "rw"
  }
  stop_timeout = "90s"
  init         = ["/sbin/init"]
  root         = "/vz/root/$VEID"
  private      = "/vz/private/$VEID"
  uid_base     = 200000
  gid_base     = 200000
  dedup        = true
}
