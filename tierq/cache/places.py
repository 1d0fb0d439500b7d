"""Country, region and major city names, for the cache's names guard (tierq.cache.identifiers.names).

Each line is a place and its other names, separated by "|"; the first is the name a match counts as, so
"U.S." and "United States" are the same place and "UK" is another. Names in capitals ("US", "UAE") match
only in capitals, so the pronoun "us" is no place; the others match in any case, on word boundaries.
"""

from __future__ import annotations

_PLACES = """
Afghanistan|Afghan
Albania
Algeria
Andorra
Angola
Argentina|Argentine
Armenia
Australia|Aussie
Austria
Azerbaijan
Bahamas
Bahrain
Bangladesh
Barbados
Belarus
Belgium
Belize
Benin
Bhutan
Bolivia
Bosnia|Bosnia and Herzegovina
Botswana
Brazil
Brunei
Bulgaria
Burkina Faso
Burundi
Cambodia
Cameroon
Canada
Chad
Chile
China|PRC|Chinese mainland
Colombia
Congo
Costa Rica
Croatia
Cuba
Cyprus
Czechia|Czech Republic
Denmark
Djibouti
Dominican Republic
Ecuador
Egypt
El Salvador
Eritrea
Estonia
Eswatini|Swaziland
Ethiopia
Fiji
Finland
France
Gabon
Gambia
Georgia
Germany
Ghana
Greece
Guatemala
Guinea
Guyana
Haiti
Honduras
Hong Kong
Hungary
Iceland
India
Indonesia
Iran
Iraq
Ireland|Eire
Israel
Italy
Ivory Coast|Cote d'Ivoire
Jamaica
Japan
Jordan
Kazakhstan
Kenya
Kosovo
Kuwait
Kyrgyzstan
Laos
Latvia
Lebanon
Lesotho
Liberia
Libya
Liechtenstein
Lithuania
Luxembourg
Madagascar
Malawi
Malaysia
Maldives
Mali
Malta
Mauritania
Mauritius
Mexico
Moldova
Monaco
Mongolia
Montenegro
Morocco
Mozambique
Myanmar|Burma
Namibia
Nepal
Netherlands|Holland
New Zealand
Nicaragua
Niger
Nigeria
North Korea|DPRK
North Macedonia|Macedonia
Norway
Oman
Pakistan
Palestine
Panama
Papua New Guinea
Paraguay
Peru
Philippines
Poland
Portugal
Qatar
Romania
Russia|Russian Federation
Rwanda
Saudi Arabia
Senegal
Serbia
Sierra Leone
Singapore
Slovakia
Slovenia
Somalia
South Africa
South Korea|Korea|ROK
South Sudan
Spain
Sri Lanka
Sudan
Suriname
Sweden
Switzerland
Syria
Taiwan
Tajikistan
Tanzania
Thailand
Togo
Trinidad and Tobago|Trinidad
Tunisia
Turkey|Turkiye
Turkmenistan
Uganda
Ukraine
United Arab Emirates|UAE|Emirates
UK|United Kingdom|U.K.|Britain|Great Britain
US|United States|U.S.|USA|U.S.A.|United States of America|America
Uruguay
Uzbekistan
Venezuela
Vietnam|Viet Nam
Yemen
Zambia
Zimbabwe
England
Scotland
Wales
Northern Ireland
EU|European Union|E.U.
Europe
Asia
Africa
Latin America
Middle East
Scandinavia
California
Texas
Florida
Quebec
Ontario
Bavaria
Catalonia
New York|NYC
Los Angeles
Chicago
Houston
San Francisco
Seattle
Boston
Washington
Miami
Toronto
Vancouver
Montreal
Mexico City
Sao Paulo
Rio de Janeiro
Buenos Aires
Lima
Bogota
Santiago
London
Manchester
Edinburgh
Dublin
Paris
Lyon
Marseille
Berlin
Munich
Hamburg
Frankfurt
Amsterdam
Rotterdam
Brussels
Zurich
Geneva
Vienna
Prague
Warsaw
Budapest
Copenhagen
Stockholm
Oslo
Helsinki
Madrid
Barcelona
Lisbon
Rome
Milan
Naples
Athens
Istanbul
Ankara
Moscow
Saint Petersburg|St. Petersburg
Kyiv|Kiev
Cairo
Lagos
Nairobi
Johannesburg
Cape Town
Dubai
Abu Dhabi
Riyadh
Doha
Tel Aviv
Jerusalem
Tehran
Karachi
Lahore
Delhi|New Delhi
Mumbai|Bombay
Bangalore|Bengaluru
Chennai
Kolkata
Dhaka
Bangkok
Jakarta
Manila
Kuala Lumpur
Hanoi
Ho Chi Minh City|Saigon
Beijing|Peking
Shanghai
Shenzhen
Guangzhou
Seoul
Tokyo
Osaka
Kyoto
Sydney
Melbourne
Auckland
"""


def places() -> list[tuple[str, str]]:
    """(a name of a place, the place's first name) for every name of every place."""
    found: list[tuple[str, str]] = []
    for line in _PLACES.strip().splitlines():
        names = [n.strip() for n in line.split("|") if n.strip()]
        found += [(name, names[0]) for name in names]
    return found
