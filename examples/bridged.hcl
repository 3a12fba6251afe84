# A container on a host bridge, with an address in each family.
container "app01" {
  ostemplate = "debian-12-x86_64"
  hostname   = "app01.example.net"
  cpu    { count = 1 }
  memory { ram = "1G" }
  disk   { size = "10G" }
  network {
    nameservers = "inherit"                # copy the host's resolv.conf
    interface "eth0" {
      bridge   = "br0"
      ip       = ["203.0.113.30/24", "2001:db8:30::30/64"]
      gateway  = "203.0.113.1"
      gateway6 = "2001:db8:30::1"
    }
  }
}
